namespace Kmem;

/// <summary>What the reclaim thread has done since start.</summary>
/// <param name="Passes">Passes run (every tick, kick or request).</param>
/// <param name="PressurePasses">Deep passes: page limit hit, GC memory load high, or asked for.</param>
/// <param name="IdleTrims">Caches trimmed because they were idle.</param>
/// <param name="SlabsFreed">Slabs the reclaim thread freed, over all caches.</param>
/// <param name="ShrinkerScans">Calls to <see cref="IShrinker.ScanObjects"/>.</param>
/// <param name="ShrinkerObjectsFreed">Objects shrinkers reported freed.</param>
/// <param name="AllocationWaits">Allocations that hit the page limit and waited for a pass.</param>
/// <param name="AllocationWaitTimeouts">Of those, waits that ended before the pass did.</param>
/// <param name="Failures">Exceptions caught on the reclaim thread (destructors, shrinkers): bugs to fix.</param>
public readonly record struct ReclaimStatistics(
    long Passes,
    long PressurePasses,
    long IdleTrims,
    long SlabsFreed,
    long ShrinkerScans,
    long ShrinkerObjectsFreed,
    long AllocationWaits,
    long AllocationWaitTimeouts,
    long Failures);
