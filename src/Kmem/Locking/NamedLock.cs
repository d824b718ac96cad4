namespace Kmem.Locking;

/// <summary>
/// What every Kmem lock has: a class name (its place in the lock order and in lock
/// statistics), whether it is a leaf, and the figures `perf lock` prints: acquisitions,
/// contended acquisitions and the time spent waiting. The figures are updated by the
/// holder, under the lock, so counting costs no atomic; a wait is timed only when the
/// lock was found held.
/// </summary>
public abstract class NamedLock : IValidatedLock
{
    private long _acquired;
    private long _contended;
    private long _waitTicks;
    private long _maxWaitTicks;
    private long _minWaitTicks = long.MaxValue;

    private protected NamedLock(string className)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(className);
        ClassName = className;
        LockRegistry.Register(this);
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

    /// <summary>
    /// This lock's figures so far. Read without the lock, so a snapshot taken while others
    /// acquire it may be a few acquisitions behind.
    /// </summary>
    public LockStatistics GetStatistics()
    {
        long min = Volatile.Read(ref _minWaitTicks);
        return new LockStatistics(
            ClassName,
            Volatile.Read(ref _acquired),
            Volatile.Read(ref _contended),
            LockStatistics.TicksToTime(Volatile.Read(ref _waitTicks)),
            LockStatistics.TicksToTime(Volatile.Read(ref _maxWaitTicks)),
            min == long.MaxValue ? TimeSpan.Zero : LockStatistics.TicksToTime(min),
            Instances: 1);
    }

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

    /// <summary>
    /// After a contended acquisition, by the new holder: the wait, in
    /// <see cref="System.Diagnostics.Stopwatch"/> ticks, since the attempt began.
    /// </summary>
    private protected void Waited(long startTicks)
    {
        long waited = System.Diagnostics.Stopwatch.GetTimestamp() - startTicks;
        _contended++;
        _waitTicks += waited;
        if (waited > _maxWaitTicks)
            _maxWaitTicks = waited;
        if (waited < _minWaitTicks)
            _minWaitTicks = waited;
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
