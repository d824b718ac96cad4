using System.Collections.Concurrent;
using System.Text;

namespace Kmem.Locking;

/// <summary>
/// The lock validator (lockdep, reduced to what Kmem needs): per thread, the locks held
/// and the regions entered; globally, the order in which lock classes have been taken.
/// It reports, before the lock is taken:
/// <list type="bullet">
/// <item>any lock taken while a leaf lock is held;</item>
/// <item>a non-leaf lock taken inside a leaf-only region (destructors run in one);</item>
/// <item>a lock class taken while a lock of the same class is held (recursion);</item>
/// <item>two classes taken in both orders (a possible ABBA deadlock), with both chains;</item>
/// <item>allocation from a cache inside its own destructor.</item>
/// </list>
/// The full validator is on in Debug builds, or with the AppContext switch
/// <c>Kmem.LockValidation</c> (or the environment variable <c>KMEM_LOCK_VALIDATION=1</c>);
/// off, its hooks are a branch on a static readonly field that the JIT folds away.
/// One rule is checked in every build: no <see cref="KLock"/> inside a leaf-only region
/// (a destructor), which costs a static load per <see cref="KLock"/> acquisition, and a
/// thread-static read besides while some thread destructs (<see cref="CheckLeafOnlyRegion"/>).
/// </summary>
/// <remarks>
/// Blind spot: the validator sees Kmem's own locks only. A destructor that takes a
/// <c>lock (...)</c> (<see cref="Monitor"/>), a <see cref="System.Threading.Lock"/>, a
/// <see cref="SemaphoreSlim"/>, waits on an event or does I/O passes every check; if it
/// blocks, the watchdog (<see cref="Reclaim.StallBudget"/>) reports it and reclaim goes on
/// around it. Use <see cref="LeafSpinLock"/> in destructors, and run
/// <see cref="Diagnostics.LifecycleCheck.RunAll(TimeSpan)"/> in tests.
/// </remarks>
internal static class LockValidator
{
    /// <summary>True when locks are validated (fixed at startup).</summary>
    public static bool IsEnabled => Enabled;

    internal static readonly bool Enabled = ReadEnabled();

    /// <summary>Initial size of a thread's held-lock stack; it grows, so no depth is refused.</summary>
    private const int InitialHeld = 16;

    [ThreadStatic] private static IValidatedLock?[]? t_held;
    [ThreadStatic] private static int t_depth;
    [ThreadStatic] private static Region? t_region;
    /// <summary>Leaf-only regions this thread is inside (always kept, in every build): the one thread-static the always-on check reads.</summary>
    [ThreadStatic] private static int t_leafOnlyDepth;
    /// <summary>
    /// Threads inside a leaf-only region now (atomic; bumped when a thread's depth leaves or
    /// reaches 0, once per destructed slab). The always-on check reads it first, so outside
    /// destruction it costs a static load, not a thread-static one. A thread in a region
    /// always sees its own increment, which is all the check needs.
    /// </summary>
    private static int s_leafOnlyThreads;

    /// <summary>Edges A→B of the class order seen so far, with the chain that first showed each.</summary>
    private static readonly ConcurrentDictionary<(string From, string To), string> s_edges = new();
    private static readonly Dictionary<string, List<string>> s_after = [];
    // The validator's own lock: a plain Lock, outside the order it checks.
    private static readonly Lock s_graphLock = new();

    private static bool ReadEnabled()
    {
#if DEBUG
        return true;
#else
        if (AppContext.TryGetSwitch("Kmem.LockValidation", out bool on))
            return on;
        return Environment.GetEnvironmentVariable("KMEM_LOCK_VALIDATION") == "1";
#endif
    }

    /// <summary>Checks the rules for taking <paramref name="taken"/>; throws if one is broken.</summary>
    internal static void BeforeAcquire(IValidatedLock taken, bool tryLock)
    {
        IValidatedLock?[] held = t_held ??= new IValidatedLock?[InitialHeld];
        for (int i = 0; i < t_depth; i++)
        {
            IValidatedLock h = held[i]!;
            if (h.IsLeaf)
                Report($"lock '{taken.ClassName}' taken while holding leaf lock '{h.ClassName}': no lock may be taken under a leaf lock", h.ClassName, taken.ClassName);
            if (ReferenceEquals(h, taken) || h.ClassName == taken.ClassName)
                Report($"recursive locking: lock '{taken.ClassName}' taken while a lock of the same class is held", h.ClassName, taken.ClassName);
        }
        // (A non-leaf lock inside a leaf-only region is checked in every build, by CheckLeafOnlyRegion.)
        if (!tryLock && t_depth > 0)
            RecordOrder(held[t_depth - 1]!, taken);
    }

    internal static void Acquired(IValidatedLock taken)
    {
        // Grows rather than refuses: an exception here would come after the lock was
        // taken, and leave it held.
        IValidatedLock?[] held = t_held ??= new IValidatedLock?[InitialHeld];
        if (t_depth == held.Length)
            Array.Resize(ref t_held, held.Length * 2);
        t_held![t_depth++] = taken;
    }

    internal static void Released(IValidatedLock released)
    {
        IValidatedLock?[]? held = t_held;
        for (int i = t_depth - 1; held != null && i >= 0; i--)
        {
            if (ReferenceEquals(held[i], released))
            {
                Array.Copy(held, i + 1, held, i, t_depth - i - 1);
                held[--t_depth] = null;
                return;
            }
        }
        throw new InvalidOperationException($"lock validator: '{released.ClassName}' released by a thread that does not hold it");
    }

    /// <summary>Enters a region: leaf-only (destructors) or not (constructors); regions nest. Kept in every build.</summary>
    internal static Region EnterRegion(string description, bool leafOnly, object? owner)
    {
        var r = new Region(description, leafOnly, owner, t_region);
        t_region = r;
        if (leafOnly && t_leafOnlyDepth++ == 0)
            Interlocked.Increment(ref s_leafOnlyThreads);
        return r;
    }

    internal static void ExitRegion(Region r)
    {
        System.Diagnostics.Debug.Assert(ReferenceEquals(t_region, r), "regions exited out of order");
        t_region = r.Parent;
        if (r.LeafOnly && --t_leafOnlyDepth == 0)
            Interlocked.Decrement(ref s_leafOnlyThreads);
    }

    /// <summary>True inside a leaf-only region (a destructor), in every build: where no non-leaf lock may be taken.</summary>
    internal static bool InLeafOnlyRegion => t_leafOnlyDepth != 0;

    /// <summary>
    /// The always-on rule, for a non-leaf lock about to be taken: throws if this thread is
    /// inside a leaf-only region. Cost when it passes: a static load and a branch while no
    /// thread destructs, and a thread-static read besides while one does.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    internal static void CheckLeafOnlyRegion(IValidatedLock taken)
    {
        if (s_leafOnlyThreads != 0 && t_leafOnlyDepth != 0)
            ReportInLeafOnlyRegion(taken);
    }

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void ReportInLeafOnlyRegion(IValidatedLock taken)
    {
        Region r = t_region!;
        while (!r.LeafOnly)
            r = r.Parent!;
        Report($"non-leaf lock '{taken.ClassName}' taken inside {r.Description}, where only leaf locks may be taken", r.Description, taken.ClassName);
    }

    /// <summary>The innermost region of this thread whose owner is <paramref name="owner"/>, if any.</summary>
    internal static Region? FindRegion(object owner)
    {
        for (Region? r = t_region; r != null; r = r.Parent)
        {
            if (ReferenceEquals(r.Owner, owner))
                return r;
        }
        return null;
    }

    /// <summary>This thread's held locks and regions, outermost first, for reports.</summary>
    internal static string HeldChain()
    {
        var parts = new List<string>();
        for (Region? r = t_region; r != null; r = r.Parent)
            parts.Insert(0, $"[{r.Description}]");
        for (int i = 0; i < t_depth; i++)
            parts.Add(t_held![i]!.ClassName);
        return parts.Count == 0 ? "(nothing)" : string.Join(" -> ", parts);
    }

    private static void RecordOrder(IValidatedLock before, IValidatedLock after)
    {
        var edge = (before.ClassName, after.ClassName);
        if (s_edges.ContainsKey(edge))
            return;
        string chain = HeldChain() + " -> " + after.ClassName;
        lock (s_graphLock)
        {
            if (s_edges.ContainsKey(edge))
                return;
            List<string>? path = FindPath(after.ClassName, before.ClassName);
            if (path != null)
            {
                var other = new StringBuilder();
                for (int i = 0; i + 1 < path.Count; i++)
                    other.Append(i == 0 ? "" : "; ").Append(s_edges[(path[i], path[i + 1])]);
                string otherChain = other.ToString();
                throw new LockValidationException(
                    $"lock order inversion: '{after.ClassName}' taken while holding '{before.ClassName}' (chain {chain}), but '{before.ClassName}' was taken under '{after.ClassName}' before (chain {otherChain}): possible deadlock",
                    before.ClassName, after.ClassName, chain, otherChain);
            }
            if (!s_after.TryGetValue(before.ClassName, out List<string>? next))
                s_after[before.ClassName] = next = [];
            next.Add(after.ClassName);
            s_edges[edge] = chain;
        }
    }

    /// <summary>A path of recorded edges from <paramref name="from"/> to <paramref name="to"/>. Caller holds the graph lock.</summary>
    private static List<string>? FindPath(string from, string to)
    {
        var parent = new Dictionary<string, string?> { [from] = null };
        var queue = new Queue<string>();
        queue.Enqueue(from);
        while (queue.Count > 0)
        {
            string at = queue.Dequeue();
            if (at == to)
            {
                var path = new List<string>();
                for (string? p = at; p != null; p = parent[p])
                    path.Insert(0, p);
                return path;
            }
            if (!s_after.TryGetValue(at, out List<string>? next))
                continue;
            foreach (string n in next)
            {
                if (parent.TryAdd(n, at))
                    queue.Enqueue(n);
            }
        }
        return null;
    }

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    internal static void Report(string message, string? held, string taken)
    {
        string chain = HeldChain();
        throw new LockValidationException($"{message} (held: {chain})", held, taken, chain, null);
    }

    /// <summary>A span of code with rules of its own: a constructor or destructor call.</summary>
    internal sealed class Region(string description, bool leafOnly, object? owner, Region? parent)
    {
        public string Description { get; } = description;
        public bool LeafOnly { get; } = leafOnly;
        public object? Owner { get; } = owner;
        public Region? Parent { get; } = parent;
    }
}
