namespace Kmem.Sheaves;

/// <summary>
/// A small dense id per live thread (1, 2, ...), the index of the thread's sheaf in
/// every cache. 0 means "no id yet", and every cache keeps slot 0 empty, so the fast
/// path needs no separate "registered?" test.
/// </summary>
/// <remarks>
/// <para>A dead thread's id is recycled once, by whichever comes first: the reclaim
/// thread, which sees the owner dead (<see cref="DeadIds"/>), drains that id's sheaf in
/// every cache and then calls <see cref="Recycle"/>; or the finalizer of the thread's
/// thread-static holder, after a GC. A per-id generation, bumped under the lock by the
/// one that recycles, makes the other a no-op. The next thread that gets the id
/// inherits its sheaves: empty after the reclaim thread's drain, or still holding
/// objects after the finalizer's, which is harmless: a sheaf is only a cache of free
/// objects, and the busy/drain handshake is per sheaf, not per thread.</para>
/// <para>Retired sheaves: a disposed cache's sheaves are freed by the thread whose id indexes
/// them, in its next slow path (<see cref="Register"/>), or by whoever recycles the id
/// once that thread is dead, never by the disposing thread (<see cref="SheafTable.Kill"/> says why).
/// All of this is under <see cref="s_lock"/> (class thread_slot, a leaf).</para>
/// </remarks>
internal static unsafe class ThreadSlot
{
    [ThreadStatic] private static Holder? t_holder;

    private static readonly Kmem.Locking.LeafSpinLock s_lock = new("thread_slot");
    private static readonly Stack<int> s_free = new();
    private static int s_next;
    /// <summary>By id: sheaves of disposed caches that the id's thread frees. Grown under the lock; read racily.</summary>
    private static List<nint>?[] s_retired = new List<nint>?[64];
    /// <summary>By id, under the lock: the thread holding it, null while the id is free.</summary>
    private static Thread?[] s_owners = new Thread?[64];
    /// <summary>By id, under the lock: bumped each time the id is recycled, so it is recycled once per owner.</summary>
    private static int[] s_generations = new int[64];

    /// <summary>The calling thread's id, or 0 before <see cref="Register"/>.</summary>
    public static int Id
    {
        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
        get => ThreadSlotId.Value;
    }

    /// <summary>Highest id handed out so far.</summary>
    public static int MaxId => Volatile.Read(ref s_next);

    /// <summary>
    /// The calling thread's id, assigned on first call. Every slow path calls it, so this
    /// is also where a thread frees the retired sheaves of its id (one racy array read
    /// when there are none).
    /// </summary>
    public static int Register()
    {
        int id = ThreadSlotId.Value;
        if (id != 0)
        {
            List<nint>?[] retired = Volatile.Read(ref s_retired);
            if (id < retired.Length && Volatile.Read(ref retired[id]) != null)
                FreeRetired(id);
            return id;
        }
        Thread self = Thread.CurrentThread;
        int generation;
        using (s_lock.Scope())
        {
            id = s_free.Count > 0 ? s_free.Pop() : ++s_next;
            if (id >= s_owners.Length)
            {
                Array.Resize(ref s_owners, Math.Max(id + 1, s_owners.Length * 2));
                Array.Resize(ref s_generations, s_owners.Length);
            }
            s_owners[id] = self;
            generation = s_generations[id];
        }
        t_holder = new Holder(id, generation);
        ThreadSlotId.Value = id;
        FreeRetired(id);   // sheaves the id's dead previous owner never freed
        return id;
    }

    /// <summary>Hands a dead sheaf to the thread of <paramref name="id"/> to free.</summary>
    public static void Retire(int id, Sheaf* sheaf)
    {
        using (s_lock.Scope())
        {
            if (id >= s_retired.Length)
            {
                var grown = new List<nint>?[Math.Max(id + 1, s_retired.Length * 2)];
                s_retired.CopyTo(grown, 0);
                Volatile.Write(ref s_retired, grown);
            }
            (s_retired[id] ??= []).Add((nint)sheaf);
        }
    }

    /// <summary>
    /// Ids whose owner thread has exited and whose id is not recycled yet. The reclaim
    /// thread drains their sheaves in every cache, then calls <see cref="Recycle"/>.
    /// </summary>
    public static List<(int Id, int Generation)> DeadIds()
    {
        var owners = new List<(int Id, int Generation, Thread Owner)>();
        using (s_lock.Scope())
        {
            for (int id = 1; id < s_owners.Length; id++)
            {
                if (s_owners[id] is { } owner)
                    owners.Add((id, s_generations[id], owner));
            }
        }
        // IsAlive calls into the runtime: outside the leaf lock.
        var dead = new List<(int, int)>();
        foreach (var (id, generation, owner) in owners)
        {
            if (!owner.IsAlive)
                dead.Add((id, generation));
        }
        return dead;
    }

    /// <summary>
    /// Gives a dead thread's id back to the pool, unless it was recycled since
    /// <see cref="DeadIds"/> returned it (by the finalizer): frees the retired sheaves of
    /// disposed caches it still indexed (its thread holds no sheaf address: it is dead).
    /// Returns whether this call recycled it.
    /// </summary>
    public static bool Recycle(int id, int generation) => RecycleIf(id, generation);

    /// <summary>
    /// Takes a dead thread's id out of circulation for good: its owner died inside its
    /// sheaf (still busy), so that sheaf may never be handed to another thread. The
    /// finalizer then does nothing either.
    /// </summary>
    public static void Quarantine(int id, int generation)
    {
        using (s_lock.Scope())
        {
            if (s_generations[id] != generation)
                return;
            s_generations[id]++;
            s_owners[id] = null;
        }
    }

    private static bool RecycleIf(int id, int generation)
    {
        using (s_lock.Scope())
        {
            if (s_generations[id] != generation)
                return false;
            s_generations[id]++;
            s_owners[id] = null;
        }
        FreeRetired(id);
        using (s_lock.Scope())
            s_free.Push(id);
        return true;
    }

    private static void FreeRetired(int id)
    {
        List<nint>? list;
        using (s_lock.Scope())
        {
            if (id >= s_retired.Length)
                return;
            list = s_retired[id];
            s_retired[id] = null;
        }
        if (list == null)
            return;
        foreach (nint s in list)
            Sheaf.Destroy((Sheaf*)s);
    }

    /// <summary>
    /// Tests: false stops the finalizer's fallback, so that a GC between a thread's exit and
    /// the reclaim pass cannot recycle the id first (the reclaim thread still does).
    /// </summary>
    internal static bool FinalizerRecycles = true;

    private sealed class Holder(int id, int generation)
    {
        // The thread is dead: it holds no sheaf address any more. A no-op if the reclaim
        // thread recycled the id first.
        ~Holder()
        {
            if (Volatile.Read(ref FinalizerRecycles))
                RecycleIf(id, generation);
        }
    }
}

/// <summary>
/// The id alone, in a class with no static constructor and no reference-type thread
/// statics: the JIT then reads it with the inlined TLS sequence (one load after the TLS
/// base), not the three dependent loads of a class with a dynamic thread-static base.
/// Measured: FastPathAnatomy in bench/Kmem.Benchmarks.
/// </summary>
internal static class ThreadSlotId
{
    [ThreadStatic] internal static int Value;
}
