namespace Kmem;

/// <summary>RCU figures since the process started.</summary>
/// <param name="GracePeriods">Grace periods run (each waited for every reader older than it).</param>
/// <param name="SharedGracePeriods">Synchronize calls served by a grace period another caller ran (they found one had started and ended while they waited for the lock).</param>
/// <param name="ReaderWaits">Times a grace period found a reader still in an older section and waited for it.</param>
/// <param name="ExitedReaders">Readers dropped because their thread had exited (inside a section or not).</param>
/// <param name="RegisteredReaders">Threads registered as readers now.</param>
/// <param name="CallbacksQueued">Callbacks queued by <see cref="Rcu.Call"/> and <see cref="Kmalloc.FreeRcu"/>.</param>
/// <param name="CallbacksInvoked">Callbacks run.</param>
/// <param name="CallbackBatches">Batches of callbacks run, one grace period each.</param>
/// <param name="CallbackFailures">Callbacks that threw (see <see cref="Rcu.LastFailure"/>).</param>
public readonly record struct RcuStatistics(
    long GracePeriods,
    long SharedGracePeriods,
    long ReaderWaits,
    long ExitedReaders,
    int RegisteredReaders,
    long CallbacksQueued,
    long CallbacksInvoked,
    long CallbackBatches,
    long CallbackFailures)
{
    /// <summary>Callbacks queued and not yet run.</summary>
    public long CallbacksPending => CallbacksQueued - CallbacksInvoked;
}
