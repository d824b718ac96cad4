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
internal static class ThreadSlot
{
    [ThreadStatic] private static Holder? t_holder;

    private static readonly Kmem.Locking.LeafSpinLock s_lock = new("thread_slot");
    private static readonly Stack<int> s_free = new();
    private static int s_next;

    /// <summary>The calling thread's id, or 0 before <see cref="Register"/>.</summary>
    public static int Id
    {
        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
        get => ThreadSlotId.Value;
    }

    /// <summary>Highest id handed out so far.</summary>
    public static int MaxId => Volatile.Read(ref s_next);

    public static int Register()
    {
        if (ThreadSlotId.Value != 0)
            return ThreadSlotId.Value;
        int id;
        using (s_lock.Scope())
            id = s_free.Count > 0 ? s_free.Pop() : ++s_next;
        t_holder = new Holder(id);
        ThreadSlotId.Value = id;
        return id;
    }

    private sealed class Holder(int id)
    {
        ~Holder()
        {
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
