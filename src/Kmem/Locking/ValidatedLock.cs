namespace Kmem.Locking;

/// <summary>What the lock validator needs to know of a lock: its class and whether it is a leaf.</summary>
internal interface IValidatedLock
{
    /// <summary>The lock class (lockdep's name): every lock of one class takes the same place in the lock order.</summary>
    string ClassName { get; }

    /// <summary>A leaf lock: no lock may be taken while it is held.</summary>
    bool IsLeaf { get; }
}
