namespace Kmem;

/// <summary>
/// A snapshot of one cache (a line of /proc/slabinfo). Counts read while other threads
/// allocate are each exact for some instant but not all for the same one.
/// </summary>
/// <param name="ActiveObjects">Objects allocated to users now.</param>
/// <param name="TotalObjects">Object slots in all slabs of the cache.</param>
/// <param name="Slabs">Slabs held.</param>
/// <param name="BytesHeld">Bytes of slab memory held.</param>
/// <param name="ConstructorCalls">Constructor calls, one per object, failed ones included (0: no constructor).</param>
/// <param name="ConstructorFailures">Constructor calls that failed (returned false or threw); each failed one slab.</param>
/// <param name="DestructorCalls">Objects destructed.</param>
/// <param name="ObjectSize">Object size asked for at creation.</param>
/// <param name="Stride">Bytes between objects (size rounded up to the alignment).</param>
/// <param name="ObjectsPerSlab">Object slots in one slab.</param>
/// <param name="SlabSize">Bytes of one slab.</param>
/// <param name="CachedObjects">Free objects parked in per-thread sheaves and the barn.</param>
/// <param name="PartialSlabs">Slabs with at least one free object, empty ones included.</param>
/// <param name="EmptySlabs">Slabs with no object allocated, kept for reuse.</param>
/// <param name="SlabsAllocated">Slabs taken from the page layer over the cache's life.</param>
/// <param name="SlabsFreed">Slabs given back to the page layer over the cache's life (a slab whose construction failed is not counted: it never held objects).</param>
/// <param name="SlabsFreedByReclaim">Slabs the reclaim thread freed (beyond the reserve, idle trim, memory pressure, after an RCU grace period).</param>
/// <param name="SlabsFreedByShrink">Slabs freed inside an explicit Shrink or Dispose.</param>
/// <param name="ConstructedFreeObjects">Free objects that hold constructor-built state (ctor/dtor caches): memory that state keeps alive.</param>
/// <param name="Aliases">Other caches merged into this one.</param>
/// <param name="DoubleFrees">Frees dropped because the object was already free in its slab (a double free that reached the slab; each also reported to <see cref="SlabReports"/>). Double frees thrown at their caller are counted too.</param>
/// <param name="FreeListRepairs">Slab free lists found corrupted (a write after free) and rebuilt from the slab's bitmap.</param>
/// <param name="LeakedObjects">Objects still live when the cache was disposed; their slabs stay mapped.</param>
/// <param name="DestructorStalls">Destructor calls on a reclaim worker that ran past <see cref="Reclaim.StallBudget"/> (each also reported to <see cref="SlabReports"/> as a <see cref="SlabReportKind.CallbackStall"/>).</param>
/// <param name="SlabsAwaitingGracePeriod">Empty slabs of a TypesafeByRcu cache waiting for an RCU grace period before their memory is returned (counted in BytesHeld, not in Slabs).</param>
/// <param name="SheafRefills">Empty per-thread sheaves refilled from the partial slabs under list_lock (SLUB_STATS' sheaf_refill), when the barn had no full sheaf. Counted in the slow path only.</param>
/// <param name="SheafFlushes">Full per-thread sheaves whose older half went back to the slabs because the barn was full (sheaf_flush). Drains by Shrink, Dispose and reclaim are not counted. Slow path only.</param>
/// <param name="BarnGets">Empty sheaves refilled with a full sheaf from the barn (barn_get). Slow path only.</param>
/// <param name="BarnPuts">Full sheaves left in the barn (barn_put). Slow path only.</param>
public readonly record struct SlabCacheStatistics(
    long ActiveObjects,
    long TotalObjects,
    long Slabs,
    long BytesHeld,
    long ConstructorCalls,
    long ConstructorFailures,
    long DestructorCalls,
    int ObjectSize = 0,
    int Stride = 0,
    int ObjectsPerSlab = 0,
    int SlabSize = 0,
    long CachedObjects = 0,
    long PartialSlabs = 0,
    long EmptySlabs = 0,
    long SlabsAllocated = 0,
    long SlabsFreed = 0,
    long SlabsFreedByReclaim = 0,
    long SlabsFreedByShrink = 0,
    long ConstructedFreeObjects = 0,
    int Aliases = 0,
    long SlabsAwaitingGracePeriod = 0,
    long DoubleFrees = 0,
    long FreeListRepairs = 0,
    long LeakedObjects = 0,
    long DestructorStalls = 0,
    long SheafRefills = 0,
    long SheafFlushes = 0,
    long BarnGets = 0,
    long BarnPuts = 0)
{
    /// <summary>Constructions that succeeded: each is matched by exactly one destructor call once its slab is freed.</summary>
    public long ConstructedObjects => ConstructorCalls - ConstructorFailures;
}
