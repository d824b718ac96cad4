namespace Kmem.Locking;

/// <summary>
/// A named mutex (kernel: a mutex or a non-leaf spinlock with a lockdep class). The name
/// is the lock class in the lock order of docs/design.md. Acquisitions and contended
/// acquisitions are counted under the lock itself, so counting costs no atomic. With
/// <see cref="LockValidator"/> on, every acquisition is checked against the lock rules.
/// </summary>
/// <remarks>Not a leaf: locks may be taken while it is held, so a destructor may not take it.</remarks>
public sealed class KLock : IValidatedLock
{
    private readonly Lock _lock = new();
    private long _acquired;
    private long _contended;

    public KLock(string className)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(className);
        ClassName = className;
    }

    /// <inheritdoc/>
    public string ClassName { get; }

    /// <inheritdoc/>
    public bool IsLeaf => false;

    public long Acquired => Volatile.Read(ref _acquired);
    public long Contended => Volatile.Read(ref _contended);

    public void Enter()
    {
        if (LockValidator.Enabled)
            LockValidator.BeforeAcquire(this, tryLock: false);
        if (!_lock.TryEnter())
        {
            _lock.Enter();
            _contended++;
        }
        _acquired++;
        if (LockValidator.Enabled)
            LockValidator.Acquired(this);
    }

    /// <summary>Takes the lock only if nobody holds it (never waits).</summary>
    public bool TryEnter()
    {
        if (LockValidator.Enabled)
            LockValidator.BeforeAcquire(this, tryLock: true);
        if (!_lock.TryEnter())
            return false;
        _acquired++;
        if (LockValidator.Enabled)
            LockValidator.Acquired(this);
        return true;
    }

    public void Exit()
    {
        if (LockValidator.Enabled)
            LockValidator.Released(this);
        _lock.Exit();
    }

    public bool IsHeldByCurrentThread => _lock.IsHeldByCurrentThread;

    /// <summary><c>using (x.Scope())</c> form of Enter/Exit.</summary>
    public Held Scope()
    {
        Enter();
        return new Held(this);
    }

    public override string ToString() => $"KLock '{ClassName}'";

    public readonly ref struct Held
    {
        private readonly KLock _owner;
        internal Held(KLock owner) => _owner = owner;
        public void Dispose() => _owner.Exit();
    }
}
