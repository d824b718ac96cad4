namespace Kmem.Locking;

/// <summary>
/// What every Kmem lock has: a class name (its place in the lock order and in lock
/// statistics), whether it is a leaf, and acquisition counts. The counts are updated by
/// the holder, under the lock, so counting costs no atomic.
/// </summary>
public abstract class NamedLock : IValidatedLock
{
    private protected long _acquired;
    private protected long _contended;

    private protected NamedLock(string className)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(className);
        ClassName = className;
    }

    /// <inheritdoc/>
    public string ClassName { get; }

    /// <inheritdoc/>
    public abstract bool IsLeaf { get; }

    /// <summary>Acquisitions so far.</summary>
    public long Acquired => Volatile.Read(ref _acquired);

    /// <summary>Acquisitions that found the lock held and had to wait.</summary>
    public long Contended => Volatile.Read(ref _contended);

    public abstract bool IsHeldByCurrentThread { get; }

    /// <summary>Before an attempt: the validator's rules (a folded branch when validation is off).</summary>
    private protected void Validate(bool tryLock)
    {
        if (LockValidator.Enabled)
            LockValidator.BeforeAcquire(this, tryLock);
    }

    /// <summary>After the lock is taken, by its holder: the count, and the validator's held stack.</summary>
    private protected void Taken()
    {
        _acquired++;
        if (LockValidator.Enabled)
            LockValidator.Acquired(this);
    }

    /// <summary>Before the lock is released, by its holder.</summary>
    private protected void Releasing()
    {
        if (LockValidator.Enabled)
            LockValidator.Released(this);
    }

    /// <summary>Takes the lock, waiting as long as it takes.</summary>
    public abstract void Enter();

    /// <summary>Takes the lock only if it is free now (never waits).</summary>
    public abstract bool TryEnter();

    public abstract void Exit();

    /// <summary><c>using (x.Scope())</c> form of Enter/Exit.</summary>
    public Held Scope()
    {
        Enter();
        return new Held(this);
    }

    public readonly ref struct Held
    {
        private readonly NamedLock _owner;
        internal Held(NamedLock owner) => _owner = owner;
        public void Dispose() => _owner.Exit();
    }

    public override string ToString() => $"{GetType().Name} '{ClassName}'";
}
