namespace Kmem.Locking;

/// <summary>
/// The lock validator found a rule broken (lockdep's report): a lock taken while a leaf
/// lock is held, a non-leaf lock taken in a leaf-only region (a destructor), a lock taken
/// recursively, two lock classes taken in both orders, or a cache allocated from inside
/// its own constructor or destructor. The lock was not taken.
/// </summary>
/// <remarks>
/// The rule against a <see cref="KLock"/> in a destructor is checked in every build; the
/// others only with lock validation on (see <see cref="NamedLock"/>). Each is a bug in the
/// code that took the lock: the message names the locks and the chain this thread held.
/// </remarks>
public sealed class LockValidationException : InvalidOperationException
{
    /// <summary>A report with a default message and no lock names.</summary>
    public LockValidationException() { }

    /// <summary>A report described by <paramref name="message"/>, with no lock names.</summary>
    public LockValidationException(string message) : base(message) { }

    /// <summary>A report described by <paramref name="message"/>, caused by <paramref name="inner"/>.</summary>
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
