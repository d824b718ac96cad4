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
    long SlabsAwaitingGracePeriod = 0);
