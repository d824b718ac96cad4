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
    [ThreadStatic] private static int t_id;
    [ThreadStatic] private static Holder? t_holder;

    private static readonly Lock s_lock = new();
    private static readonly Stack<int> s_free = new();
    private static int s_next;

    /// <summary>The calling thread's id, or 0 before <see cref="Register"/>.</summary>
    public static int Id => t_id;

    /// <summary>Highest id handed out so far.</summary>
    public static int MaxId => Volatile.Read(ref s_next);

    public static int Register()
    {
        if (t_id != 0)
            return t_id;
        int id;
        lock (s_lock)
            id = s_free.Count > 0 ? s_free.Pop() : ++s_next;
        t_holder = new Holder(id);
        t_id = id;
        return id;
    }

    private sealed class Holder(int id)
    {
        ~Holder()
        {
            lock (s_lock)
                s_free.Push(id);
        }
    }
}
