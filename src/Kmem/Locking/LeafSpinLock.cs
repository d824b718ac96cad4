namespace Kmem.Locking;

/// <summary>
/// A leaf spinlock: no lock may be taken while it is held (the thread's rule for slab
/// destructors: they may take only leaf locks). Hold it for a few instructions, never
/// across an allocation, a callback or a wait. Not reentrant.
/// </summary>
/// <remarks>
/// With <see cref="LockValidator"/> on, taking any lock while holding one, or taking one
/// recursively, throws <see cref="LockValidationException"/> naming both.
/// </remarks>
public sealed class LeafSpinLock : NamedLock
{
    private int _state;
    private int _owner;

    public LeafSpinLock(string className)
        : base(className)
    {
    }

    /// <inheritdoc/>
    public override bool IsLeaf => true;

    public override bool IsHeldByCurrentThread => Volatile.Read(ref _owner) == Environment.CurrentManagedThreadId;

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
