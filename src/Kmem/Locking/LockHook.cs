namespace Kmem.Locking;

/// <summary>When a <see cref="LockHook"/> runs.</summary>
internal enum LockHookPoint
{
    /// <summary>Just before the lock is taken (not held yet).</summary>
    Acquiring,
    /// <summary>Just before the lock is released (still held), as the seed's fuzzing hook in local_unlock_irqrestore.</summary>
    Releasing,
}

/// <summary>
/// A debug hook for fuzzing re-entry, after the one the kmalloc_nolock() author fuzzed his
/// patches with: <see cref="Callback"/> runs at every point where an allocator lock is about
/// to be taken or released, on the thread doing it. From it a test may call
/// <see cref="Kmalloc.AllocNoLock(nuint, KmallocFlags)"/> and <see cref="Kmalloc.FreeNoLock"/>, as an interrupt or
/// a tracing hook would. It never runs inside itself. Unset (null) it costs one load and
/// a branch per lock operation.
/// </summary>
internal static class LockHook
{
    [ThreadStatic] private static bool t_inside;

    /// <summary>The hook: the lock class and the point. Null for none.</summary>
    public static Action<string, LockHookPoint>? Callback { get; set; }

    internal static void Run(NamedLock l, LockHookPoint point)
    {
        Action<string, LockHookPoint>? callback = Callback;
        if (callback == null || t_inside)
            return;
        t_inside = true;
        try
        {
            callback(l.ClassName, point);
        }
        finally
        {
            t_inside = false;
        }
    }
}
