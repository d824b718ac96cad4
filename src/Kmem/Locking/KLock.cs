namespace Kmem.Locking;

/// <summary>
/// A named mutex (kernel: a spinlock or mutex with a lockdep class). The name is the
/// lock class in the lock order of docs/design.md; acquisitions and contended
/// acquisitions are counted, under the lock itself, so counting costs no atomic.
/// </summary>
internal sealed class KLock
{
    private readonly Lock _lock = new();
    private long _acquired;
    private long _contended;

    public KLock(string className) => ClassName = className;

    /// <summary>The lock class, as the lock order names it.</summary>
    public string ClassName { get; }

    public long Acquired => Volatile.Read(ref _acquired);
    public long Contended => Volatile.Read(ref _contended);

    public void Enter()
    {
        if (!_lock.TryEnter())
        {
            _lock.Enter();
            _contended++;
        }
        _acquired++;
    }

    /// <summary>Takes the lock only if nobody holds it (never waits).</summary>
    public bool TryEnter()
    {
        if (!_lock.TryEnter())
            return false;
        _acquired++;
        return true;
    }

    public void Exit() => _lock.Exit();

    public bool IsHeldByCurrentThread => _lock.IsHeldByCurrentThread;

    /// <summary><c>using (x.Scope())</c> form of Enter/Exit.</summary>
    public Held Scope()
    {
        Enter();
        return new Held(this);
    }

    public readonly ref struct Held
    {
        private readonly KLock _owner;
        internal Held(KLock owner) => _owner = owner;
        public void Dispose() => _owner.Exit();
    }
}
