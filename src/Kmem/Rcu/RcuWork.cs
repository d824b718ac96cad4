namespace Kmem;

/// <summary>
/// One queued callback: an <see cref="Action"/> (<see cref="Rcu.Call"/>), or a static
/// function and its argument (<see cref="Kmalloc.FreeRcu"/> queues its free that way, so
/// it allocates nothing and the RCU layer never calls up into the allocator by name).
/// </summary>
internal readonly unsafe struct RcuWork
{
    public RcuWork(Action action)
    {
        Action = action;
    }

    public RcuWork(delegate* managed<nint, void> function, nint argument)
    {
        Function = function;
        Argument = argument;
    }

    public Action? Action { get; }

    public delegate* managed<nint, void> Function { get; }

    public nint Argument { get; }
}
