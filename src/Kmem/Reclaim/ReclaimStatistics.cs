namespace Kmem;

/// <summary>What the reclaim thread has done since start.</summary>
/// <param name="Passes">Passes run (every tick, kick or request).</param>
/// <param name="PressurePasses">Deep passes: page limit hit, GC memory load high, or asked for.</param>
/// <param name="IdleTrims">Caches trimmed because they were idle.</param>
/// <param name="SlabsFreed">Slabs the reclaim thread gave back to the page layer, over all caches, each counted when it was freed.</param>
/// <param name="ShrinkerScans">Calls to <see cref="IShrinker.ScanObjects"/>.</param>
/// <param name="ShrinkerObjectsFreed">Objects shrinkers reported freed.</param>
/// <param name="AllocationWaits">Allocations that hit the page limit and waited for a pass.</param>
/// <param name="AllocationWaitTimeouts">Of those, waits that ended before the pass did.</param>
/// <param name="Failures">Exceptions caught on the reclaim thread (destructors, shrinkers): bugs to fix.</param>
/// <param name="SlabsAwaitingGracePeriod">Empty slabs of TypesafeByRcu caches waiting for a grace period now, over all caches: memory reclaimed but not yet returned (counted in SlabsFreed only if a reclaim pass frees them).</param>
/// <param name="CallbackStalls">Destructor, shrinker and RCU callback calls the watchdog found running past <see cref="Reclaim.StallBudget"/>, each reported once.</param>
/// <param name="StalledWorkers">Reclaim workers replaced while stuck in a callback that has not returned yet (now).</param>
/// <param name="CachesSkippedBusy">Times a pass skipped a cache because its sheaf_drain was held (a Shrink, a Dispose, or a stuck worker).</param>
/// <param name="ShrinkersSkippedBusy">Times a pass skipped a shrinker that a stuck worker was still running.</param>
/// <param name="ExitedThreadsReaped">Exited threads whose sheaves a pass drained in every cache before their id was recycled.</param>
/// <param name="ExitedThreadObjects">Free objects those drains took from exited threads' sheaves back to their slabs.</param>
public readonly record struct ReclaimStatistics(
    long Passes,
    long PressurePasses,
    long IdleTrims,
    long SlabsFreed,
    long ShrinkerScans,
    long ShrinkerObjectsFreed,
    long AllocationWaits,
    long AllocationWaitTimeouts,
    long Failures,
    long SlabsAwaitingGracePeriod = 0,
    long CallbackStalls = 0,
    int StalledWorkers = 0,
    long CachesSkippedBusy = 0,
    long ShrinkersSkippedBusy = 0,
    long ExitedThreadsReaped = 0,
    long ExitedThreadObjects = 0);
