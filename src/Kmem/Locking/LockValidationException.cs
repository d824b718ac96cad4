namespace Kmem.Locking;

/// <summary>
/// The lock validator found a rule broken (lockdep's report): a lock taken while a leaf
/// lock is held, a non-leaf lock taken in a leaf-only region (a destructor), a lock taken
/// recursively, two lock classes taken in both orders, or a cache allocated from inside
/// its own constructor or destructor. The lock was not taken.
/// </summary>
public sealed class LockValidationException : InvalidOperationException
{
    public LockValidationException() { }
    public LockValidationException(string message) : base(message) { }
    public LockValidationException(string message, Exception inner) : base(message, inner) { }

    internal LockValidationException(string message, string? held, string taken, string heldChain, string? otherChain)
        : base(message)
    {
        HeldLock = held;
        TakenLock = taken;
        HeldChain = heldChain;
        OtherChain = otherChain;
    }

    /// <summary>The lock (or region) the thread held that forbids <see cref="TakenLock"/>.</summary>
    public string? HeldLock { get; }

    /// <summary>The lock the thread tried to take (or the cache it tried to allocate from).</summary>
    public string TakenLock { get; } = "";

    /// <summary>Locks and regions this thread held, outermost first.</summary>
    public string HeldChain { get; } = "";

    /// <summary>For an order inversion: the chain seen earlier that took the locks the other way.</summary>
    public string? OtherChain { get; }
}
