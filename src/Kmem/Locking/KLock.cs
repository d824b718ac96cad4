namespace Kmem.Locking;

/// <summary>
/// A named mutex (kernel: a mutex or a non-leaf spinlock with a lockdep class). The name
/// is the lock class in the lock order of docs/design.md. Acquisitions, contention and
/// wait times are counted under the lock itself, so counting costs no atomic. In every
/// build, taking it inside a leaf-only region (a destructor) throws; with lock validation
/// on (see <see cref="NamedLock"/>), every acquisition is checked against all the lock rules.
/// </summary>
/// <remarks>
/// Not a leaf: locks may be taken while it is held, so a destructor may not take it (use a
/// <see cref="LeafSpinLock"/> there). A waiter blocks as on <see cref="System.Threading.Lock"/>,
/// which it wraps.
/// </remarks>
public sealed class KLock : NamedLock
{
    private readonly Lock _lock = new();

    /// <summary>A mutex of the lock class <paramref name="className"/>.</summary>
    /// <param name="className">Its class (see <see cref="NamedLock.ClassName"/>): locks that take the same place in your lock order share one.</param>
    /// <exception cref="ArgumentException"><paramref name="className"/> is null, empty or blank.</exception>
    public KLock(string className)
        : base(className)
    {
    }

    /// <inheritdoc/>
    public override bool IsLeaf => false;

    /// <summary>Takes the lock, waiting as long as it takes.</summary>
    /// <exception cref="LockValidationException">
    /// Called inside a slab destructor, or, with validation on, the acquisition breaks a lock
    /// rule (recursion included); the lock was not taken.
    /// </exception>
    public override void Enter()
    {
        LockHook.Run(this, LockHookPoint.Acquiring);
        LockValidator.CheckLeafOnlyRegion(this);
        Validate(tryLock: false);
        if (!_lock.TryEnter())
        {
            long start = System.Diagnostics.Stopwatch.GetTimestamp();
            _lock.Enter();
            Waited(start);
        }
        Taken();
    }

    /// <summary>Takes the lock only if nobody holds it (never waits).</summary>
    /// <returns>True when the lock was taken.</returns>
    /// <exception cref="LockValidationException">As for <see cref="Enter"/>, but a try never counts toward the lock order.</exception>
    public override bool TryEnter()
    {
        LockHook.Run(this, LockHookPoint.Acquiring);
        LockValidator.CheckLeafOnlyRegion(this);
        Validate(tryLock: true);
        if (!_lock.TryEnter())
            return false;
        Taken();
        return true;
    }

    /// <summary>
    /// The try-lock of a path that must never wait (<see cref="Kmalloc.AllocNoLock(nuint, KmallocFlags)"/>):
    /// false when anybody holds the lock, this thread included (it re-entered the allocator
    /// from under it, where taking it again would corrupt what the outer frame is changing).
    /// Not checked against the lock order: a lock that is never waited for cannot deadlock,
    /// so it is legal under a leaf lock and in a destructor. No hook runs on taking it (its
    /// <see cref="Exit"/> runs the releasing hook as any other).
    /// </summary>
    internal bool TryEnterNeverWaiting()
    {
        if (_lock.IsHeldByCurrentThread || !_lock.TryEnter())
            return false;
        Taken();
        return true;
    }

    /// <inheritdoc/>
    public override void Exit()
    {
        LockHook.Run(this, LockHookPoint.Releasing);
        Releasing();
        _lock.Exit();
    }

    /// <inheritdoc/>
    public override bool IsHeldByCurrentThread => _lock.IsHeldByCurrentThread;
}
