namespace Kmem.Sheaves;

/// <summary>
/// A small dense id per live thread (1, 2, ...), the index of the thread's sheaf in
/// every cache. 0 means "no id yet", and every cache keeps slot 0 empty, so the fast
/// path needs no separate "registered?" test. A dead thread's id is recycled by a
/// finalizer (its thread-static holder dies with it); the next thread that gets the
/// id inherits that thread's sheaves, objects included, which is harmless: a sheaf is
/// only a cache of free objects, and the busy/drain handshake is per sheaf, not per
/// thread.
/// </summary>
/// <remarks>
/// Retired sheaves: a disposed cache's sheaves are freed by the thread whose id indexes
/// them, in its next slow path (<see cref="Register"/>), or by the finalizer once that
/// thread is dead, never by the disposing thread (<see cref="SheafTable.Kill"/> says why).
/// All of this is under <see cref="s_lock"/> (class thread_slot, a leaf).
/// </remarks>
internal static unsafe class ThreadSlot
{
    [ThreadStatic] private static Holder? t_holder;

    private static readonly Kmem.Locking.LeafSpinLock s_lock = new("thread_slot");
    private static readonly Stack<int> s_free = new();
    private static int s_next;
    /// <summary>By id: sheaves of disposed caches that the id's thread frees. Grown under the lock; read racily.</summary>
    private static List<nint>?[] s_retired = new List<nint>?[64];

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
        using (s_lock.Scope())
            id = s_free.Count > 0 ? s_free.Pop() : ++s_next;
        t_holder = new Holder(id);
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

    private sealed class Holder(int id)
    {
        ~Holder()
        {
            // The thread is dead: it holds no sheaf address any more.
            FreeRetired(id);
            using (s_lock.Scope())
                s_free.Push(id);
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
