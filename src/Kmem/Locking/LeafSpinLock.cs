namespace Kmem.Locking;

/// <summary>
/// A leaf spinlock: no lock may be taken while it is held (the thread's rule for slab
/// destructors: they may take only leaf locks). Hold it for a few instructions, never
/// across an allocation, a callback or a wait. Not reentrant.
/// </summary>
/// <remarks>
/// This is the lock a slab destructor may take (for a registry its objects are on, say): a
/// destructor runs in a leaf-only region, where a <see cref="KLock"/> throws. A waiter spins
/// (with <see cref="SpinWait"/>, which yields and sleeps when the wait is long). With lock
/// validation on (see <see cref="NamedLock"/>), taking any lock while holding one, or taking
/// one recursively, throws <see cref="LockValidationException"/> naming both.
/// </remarks>
public sealed class LeafSpinLock : NamedLock
{
    private int _state;
    private int _owner;

    /// <summary>A leaf spinlock of the lock class <paramref name="className"/>.</summary>
    /// <param name="className">Its class (see <see cref="NamedLock.ClassName"/>).</param>
    /// <exception cref="ArgumentException"><paramref name="className"/> is null, empty or blank.</exception>
    public LeafSpinLock(string className)
        : base(className)
    {
    }

    /// <inheritdoc/>
    public override bool IsLeaf => true;

    /// <inheritdoc/>
    public override bool IsHeldByCurrentThread => Volatile.Read(ref _owner) == Environment.CurrentManagedThreadId;

    /// <summary>Takes the lock, spinning until it is free. Taking it again on the thread that holds it never returns, unless validation is on (then it throws).</summary>
    /// <exception cref="LockValidationException">With validation on: a lock is already held under which this one may not be taken (any, when that one is a leaf), or this class is held.</exception>
    public override void Enter()
    {
        LockHook.Run(this, LockHookPoint.Acquiring);
        Validate(tryLock: false);
        if (Interlocked.CompareExchange(ref _state, 1, 0) != 0)
        {
            long start = System.Diagnostics.Stopwatch.GetTimestamp();
            var wait = new SpinWait();
            do
                wait.SpinOnce();
            while (Volatile.Read(ref _state) != 0 || Interlocked.CompareExchange(ref _state, 1, 0) != 0);
            Waited(start);
        }
        _owner = Environment.CurrentManagedThreadId;
        Taken();
    }

    /// <summary>Takes the lock only if it is free (never spins).</summary>
    /// <returns>True when the lock was taken.</returns>
    /// <exception cref="LockValidationException">As for <see cref="Enter"/>.</exception>
    public override bool TryEnter()
    {
        Validate(tryLock: true);
        if (Interlocked.CompareExchange(ref _state, 1, 0) != 0)
            return false;
        _owner = Environment.CurrentManagedThreadId;
        Taken();
        return true;
    }

    /// <exception cref="SynchronizationLockException">The calling thread does not hold the lock (released twice, or by another thread); the lock is left as it was.</exception>
    public override void Exit()
    {
        if (_owner != Environment.CurrentManagedThreadId)
            ThrowNotOwner();
        LockHook.Run(this, LockHookPoint.Releasing);
        Releasing();
        _owner = 0;
        Volatile.Write(ref _state, 0);
    }

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private void ThrowNotOwner() =>
        throw new SynchronizationLockException(_owner == 0
            ? $"leaf lock '{ClassName}' released while not held (released twice?)"
            : $"leaf lock '{ClassName}' released by thread {Environment.CurrentManagedThreadId}, but thread {_owner} holds it");
}
