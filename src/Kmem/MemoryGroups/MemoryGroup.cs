using System.Diagnostics;
using Kmem.MemoryGroups;

namespace Kmem;

/// <summary>
/// A memory group (the kernel's memory cgroup, seen through <c>obj_cgroup</c>): a node
/// of a tree with a byte limit. Work done inside <c>using (group.Enter())</c> charges
/// the objects of <see cref="SlabFlags.Account"/> caches and accounted per-CPU areas to
/// it, and the charge is checked against its limit and every ancestor's.
/// </summary>
/// <remarks>
/// <para>Counting follows <c>page_counter</c>: a group's counter holds the charges of its
/// whole subtree, and a charge that would pass any limit on the way to the root is
/// refused and undone. The root has no limit and is never charged directly (a charge
/// made with the root, or no group, current is free), as in the kernel.</para>
/// <para>A per-CPU stock of bytes charged ahead (<c>memcg_stock</c>) lets most charges and
/// uncharges touch one CPU-local word instead of the shared counters of every ancestor;
/// <see cref="Usage"/> leaves the stock out, so it is the bytes live objects hold. A
/// charge that meets a limit drains every stock and retries exactly before it fails.</para>
/// <para>Disposing a group takes it offline: objects still charged to it are reparented
/// (their later uncharges reach the parent), as <c>memcg_reparent_objcgs</c> does.</para>
/// </remarks>
public sealed class MemoryGroup : IDisposable
{
    private static readonly object s_gate = new();
    private static MemoryGroup?[] s_groups = new MemoryGroup?[64];
    private static int s_nextId = 1;

    [ThreadStatic] private static MemoryGroup? t_current;

    private long _charged;
    private long _peak;
    private long _failures;
    private long _limit;
    private readonly List<MemoryGroup> _children = [];
    private volatile bool _offline;

    /// <summary>The root of every group: no limit, its usage the sum of its subtree's.</summary>
    public static MemoryGroup Root { get; } = new("root", null, long.MaxValue);

    private MemoryGroup(string name, MemoryGroup? parent, long limit)
    {
        Name = name;
        Parent = parent;
        _limit = limit;
        lock (s_gate)
        {
            if (s_nextId > ChargeStock.MaxGroupId)
                throw new InvalidOperationException($"memory group '{name}': more than {ChargeStock.MaxGroupId} groups were created");
            Id = s_nextId++;
            if (Id >= s_groups.Length)
                Array.Resize(ref s_groups, s_groups.Length * 2);
            Volatile.Write(ref s_groups[Id], this);
            parent?._children.Add(this);
        }
    }

    /// <summary>The name given to <see cref="CreateChild"/> ("root" for <see cref="Root"/>); shown in errors and statistics, not unique.</summary>
    public string Name { get; }

    /// <summary>The parent group; null for <see cref="Root"/>.</summary>
    public MemoryGroup? Parent { get; }

    /// <summary>The group charges of the calling thread go to (null: none, as the root).</summary>
    public static MemoryGroup? Current => t_current;

    /// <summary>Identity within the process, stored with each charged object (never reused).</summary>
    internal int Id { get; }

    /// <summary>Bytes this group and its subtree may hold; <see cref="long.MaxValue"/> for no limit.</summary>
    /// <remarks>Lowering it below <see cref="Usage"/> takes nothing back; later charges fail until usage falls.</remarks>
    public long Limit
    {
        get => Volatile.Read(ref _limit);
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            if (this == Root && value != long.MaxValue)
                throw new InvalidOperationException("the root memory group has no limit");
            Volatile.Write(ref _limit, value);
        }
    }

    /// <summary>Bytes charged to this group and its subtree by live objects and areas (stock left out).</summary>
    public long Usage => Math.Max(0, Volatile.Read(ref _charged) - ChargeStock.HeldFor(this));

    /// <summary>The highest the counter reached, stock included (the kernel's memory.peak).</summary>
    public long Peak => Volatile.Read(ref _peak);

    /// <summary>Charges refused because this group's limit would have been passed (failcnt).</summary>
    public long Failures => Volatile.Read(ref _failures);

    /// <summary>True once <see cref="Dispose"/> has taken the group offline: it can no longer be entered or given children.</summary>
    public bool IsOffline => _offline;

    /// <summary>Live child groups.</summary>
    public IReadOnlyList<MemoryGroup> Children
    {
        get
        {
            lock (s_gate)
                return [.. _children];
        }
    }

    /// <summary>A new child group.</summary>
    /// <param name="name">Shown in errors and statistics.</param>
    /// <param name="limit">Byte limit of the child's subtree; <see cref="long.MaxValue"/> for none.</param>
    public MemoryGroup CreateChild(string name, long limit = long.MaxValue)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentOutOfRangeException.ThrowIfNegative(limit);
        ObjectDisposedException.ThrowIf(_offline, this);
        return new MemoryGroup(name, this, limit);
    }

    /// <summary>Makes this the calling thread's group until the scope is disposed (then the previous one is back).</summary>
    public EnterScope Enter()
    {
        ObjectDisposedException.ThrowIf(_offline, this);
        MemoryGroup? previous = t_current;
        t_current = this;
        return new EnterScope(previous);
    }

    /// <summary>Restores the thread's previous group.</summary>
    public readonly struct EnterScope : IDisposable
    {
        private readonly MemoryGroup? _previous;

        internal EnterScope(MemoryGroup? previous) => _previous = previous;

        /// <summary>Makes the group that was current before <see cref="Enter"/> current again, on this thread (dispose it on the thread that entered).</summary>
        public void Dispose() => t_current = _previous;
    }

    /// <summary>
    /// Charges <paramref name="bytes"/> to this group (and so its ancestors); false, with
    /// nothing charged, if that would pass a limit. Charges to the root are free.
    /// </summary>
    public bool TryCharge(long bytes) => TryCharge(bytes, out _);

    /// <summary>As <see cref="TryCharge(long)"/>, naming the group whose limit refused it.</summary>
    public bool TryCharge(long bytes, out MemoryGroup? refusedBy)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        refusedBy = null;
        MemoryGroup g = Online();
        if (g == Root || bytes == 0)
            return true;
        if (bytes <= ChargeStock.Batch && ChargeStock.TryConsume(g, bytes))
            return true;
        long batch = Math.Max(ChargeStock.Batch, bytes);
        if (g.TryChargeCounters(batch, countFailure: false, out _))
        {
            if (batch > bytes)
                ChargeStock.Refill(g, batch - bytes);
            return true;
        }
        // Near a limit: give every stock back, then charge exactly what was asked.
        ChargeStock.DrainAll();
        return g.TryChargeCounters(bytes, countFailure: true, out refusedBy);
    }

    /// <summary>Gives back a charge made with <see cref="TryCharge(long)"/> on this group.</summary>
    public void Uncharge(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        MemoryGroup g = Online();
        if (g == Root || bytes == 0)
            return;
        ChargeStock.Refill(g, bytes);
    }

    /// <summary>Returns every CPU's stock of charged-ahead bytes to the counters (drain_all_stock).</summary>
    public static void DrainStocks() => ChargeStock.DrainAll();

    /// <summary>
    /// Takes the group offline: it can no longer be entered, its stock is given back, and
    /// charges still held by live objects move to the parent. Its children must go first.
    /// </summary>
    /// <exception cref="InvalidOperationException">The root, or a group with live children.</exception>
    public void Dispose()
    {
        if (this == Root)
            throw new InvalidOperationException("the root memory group cannot be disposed");
        lock (s_gate)
        {
            if (_offline)
                return;
            if (_children.Count > 0)
                throw new InvalidOperationException($"memory group '{Name}' still has child groups: {string.Join(", ", _children.Select(c => c.Name))}");
            _offline = true;
            Parent!._children.Remove(this);
        }
        ChargeStock.Drain(this);
    }

    /// <summary>The name, usage and limit, for logs: <c>memory group 'tenant' (usage 4096 of 67108864)</c>.</summary>
    public override string ToString() => $"memory group '{Name}' (usage {Usage} of {(Limit == long.MaxValue ? "unlimited" : Limit.ToString(System.Globalization.CultureInfo.InvariantCulture))})";

    /// <summary>The group a charge recorded under <paramref name="id"/> belongs to now (its nearest online ancestor).</summary>
    internal static MemoryGroup FromId(int id)
    {
        MemoryGroup? g = Volatile.Read(ref s_groups)[id];
        Debug.Assert(g != null, "charge recorded under an unknown memory group id");
        return g.Online();
    }

    /// <summary>
    /// Every group online now, root first, read without s_gate (for metrics, which must
    /// not wait). Slots are written with release stores and never cleared (ids are not
    /// reused); a group created meanwhile may be missed.
    /// </summary>
    internal static List<MemoryGroup> OnlineUnlocked()
    {
        MemoryGroup?[] groups = Volatile.Read(ref s_groups);
        var list = new List<MemoryGroup>();
        for (int i = 0; i < groups.Length; i++)
        {
            if (Volatile.Read(ref groups[i]) is { IsOffline: false } g)
                list.Add(g);
        }
        return list;
    }

    /// <summary>As <see cref="FromId"/>, or null when <paramref name="id"/> names no group (a damaged record).</summary>
    internal static MemoryGroup? TryFromId(int id)
    {
        MemoryGroup?[] groups = Volatile.Read(ref s_groups);
        return (uint)id < (uint)groups.Length && groups[id] is { } g ? g.Online() : null;
    }

    /// <summary>This group, or its nearest online ancestor if it was disposed (reparenting).</summary>
    internal MemoryGroup Online()
    {
        MemoryGroup g = this;
        while (g._offline)
            g = g.Parent!;
        return g;
    }

    internal bool IsSelfOrDescendantOf(MemoryGroup ancestor)
    {
        for (MemoryGroup? g = this; g != null; g = g.Parent)
        {
            if (g == ancestor)
                return true;
        }
        return false;
    }

    /// <summary>page_counter_try_charge: adds to every counter up to the root, undoing all at the first limit passed.</summary>
    internal bool TryChargeCounters(long bytes, bool countFailure, out MemoryGroup? refusedBy)
    {
        for (MemoryGroup? g = this; g != null; g = g.Parent)
        {
            long now = Interlocked.Add(ref g._charged, bytes);
            if (now > Volatile.Read(ref g._limit))
            {
                for (MemoryGroup? u = this; u != g.Parent; u = u!.Parent)
                    Interlocked.Add(ref u!._charged, -bytes);
                if (countFailure)
                    Interlocked.Increment(ref g._failures);
                refusedBy = g;
                return false;
            }
            long peak;
            while (now > (peak = Volatile.Read(ref g._peak)) && Interlocked.CompareExchange(ref g._peak, now, peak) != peak)
            {
            }
        }
        refusedBy = null;
        return true;
    }

    internal void UnchargeCounters(long bytes)
    {
        for (MemoryGroup? g = this; g != null; g = g.Parent)
        {
            long now = Interlocked.Add(ref g._charged, -bytes);
            Debug.Assert(now >= 0, $"memory group '{g.Name}' uncharged below zero");
        }
    }
}
