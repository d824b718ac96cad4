namespace Kmem.Locking;

/// <summary>
/// What every Kmem lock has: a class name (its place in the lock order and in lock
/// statistics), whether it is a leaf, and the figures `perf lock` prints: acquisitions,
/// contended acquisitions and the time spent waiting. The figures are updated by the
/// holder, under the lock, so counting costs no atomic; a wait is timed only when the
/// lock was found held.
/// </summary>
/// <remarks>
/// <para>Two kinds exist, and only these (the constructor is not open to other assemblies):
/// <see cref="KLock"/>, a mutex under which other locks may be taken, and
/// <see cref="LeafSpinLock"/>, under which none may, the only kind a slab destructor may take.
/// Kmem's own locks are of these kinds; code of yours uses them when its locks should follow
/// the same rules (a destructor's lock must be a <see cref="LeafSpinLock"/>) and appear in
/// <see cref="LockStatistics.ByClass"/> beside Kmem's.</para>
/// <para>Lock validation (lockdep): with the AppContext switch <c>Kmem.LockValidation</c> on, or
/// the environment variable <c>KMEM_LOCK_VALIDATION=1</c> (read once at startup; always on in
/// a Debug build of Kmem), every acquisition is checked against the rules and a broken one
/// throws <see cref="LockValidationException"/> before the lock is taken: nothing under a
/// leaf lock, no lock class taken while one of its class is held, no two classes taken in
/// both orders. Off, the checks cost a folded branch; one rule is checked in every build, no
/// <see cref="KLock"/> inside a destructor.</para>
/// <para>Every member is safe to call from any thread. Taking a lock again on the thread
/// that holds it is a bug, which validation reports.</para>
/// </remarks>
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

    /// <summary>
    /// The lock class (lockdep's name): every lock of one class takes the same place in the
    /// lock order, and their figures are summed under this name in <see cref="LockStatistics.ByClass"/>.
    /// </summary>
    public string ClassName { get; }

    /// <summary>True for a leaf lock (<see cref="LeafSpinLock"/>): no lock may be taken while it is held.</summary>
    public abstract bool IsLeaf { get; }

    /// <summary>Acquisitions so far.</summary>
    public long Acquired => Volatile.Read(ref _acquired);

    /// <summary>Acquisitions that found the lock held and had to wait.</summary>
    public long Contended => Volatile.Read(ref _contended);

    /// <summary>True when the calling thread holds this lock.</summary>
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

    /// <summary>Releases the lock, which the calling thread must hold.</summary>
    /// <exception cref="SynchronizationLockException">The calling thread does not hold the lock.</exception>
    public abstract void Exit();

    /// <summary>Takes the lock as <see cref="Enter"/> does, for <c>using (l.Scope()) { ... }</c>: disposing the result releases it.</summary>
    public Held Scope()
    {
        Enter();
        return new Held(this);
    }

    /// <summary>A held lock, from <see cref="Scope"/>; a ref struct, so it cannot outlive the method that took it.</summary>
    public readonly ref struct Held
    {
        private readonly NamedLock _owner;
        internal Held(NamedLock owner) => _owner = owner;

        /// <summary>Releases the lock (<see cref="Exit"/>).</summary>
        public void Dispose() => _owner.Exit();
    }

    /// <summary>The kind and class, for logs: <c>KLock 'list_lock'</c>.</summary>
    public override string ToString() => $"{GetType().Name} '{ClassName}'";
}
