namespace Kmem;

/// <summary>
/// One queued callback: an <see cref="Action"/> (<see cref="Rcu.Call"/>) or a pointer
/// for <see cref="Kmalloc.Free"/> (<see cref="Kmalloc.FreeRcu"/>, which so allocates nothing).
/// </summary>
internal readonly struct RcuWork(Action? action, nint pointer)
{
    public Action? Action { get; } = action;

    public nint Pointer { get; } = pointer;
}
