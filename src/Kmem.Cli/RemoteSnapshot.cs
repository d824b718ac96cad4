namespace Kmem.Cli;

/// <summary>
/// One cache of another process as its Kmem meter reports it: the figures of
/// <see cref="SlabCacheStatistics"/> the meter carries (not the object size, objects per
/// slab, slab size or aliases, which it has no instrument for).
/// </summary>
/// <param name="Name">The <c>kmem.cache.name</c> tag.</param>
/// <param name="ActiveObjects"><c>kmem.cache.objects.active</c>.</param>
/// <param name="TotalObjects"><c>kmem.cache.objects.total</c>.</param>
/// <param name="CachedObjects"><c>kmem.cache.objects.cached</c>.</param>
/// <param name="Slabs">
/// <c>kmem.cache.slabs</c> over the states full, partial and empty: what
/// <see cref="SlabCacheStatistics.Slabs"/> counts (slabs waiting for a grace period are not in it).
/// </param>
/// <param name="SlabsAwaitingGracePeriod"><c>kmem.cache.slabs</c> with <c>kmem.slab.state=grace_period</c>.</param>
/// <param name="BytesHeld"><c>kmem.cache.memory.held</c>.</param>
/// <param name="ConstructorCalls"><c>kmem.cache.constructor.calls</c>; 0 for a cache without a constructor or destructor, as in <see cref="SlabInfo.Format"/>.</param>
/// <param name="DestructorCalls"><c>kmem.cache.destructor.calls</c>, likewise.</param>
internal sealed record RemoteCache(
    string Name,
    long ActiveObjects,
    long TotalObjects,
    long CachedObjects,
    long Slabs,
    long SlabsAwaitingGracePeriod,
    long BytesHeld,
    long ConstructorCalls,
    long DestructorCalls)
{
    /// <summary>Active objects as a percentage of the slots, as slabtop's USE column (0 for a cache without slots).</summary>
    public double PercentActive => TotalObjects == 0 ? 0 : 100.0 * ActiveObjects / TotalObjects;
}

/// <summary>
/// One collection of another process's Kmem meter: every value the runtime published
/// between one <c>CollectionStart</c> and its <c>CollectionStop</c>.
/// </summary>
/// <param name="IntervalEnd">The end of the collection interval, as the target's clock gave it (UTC).</param>
/// <param name="HasKmemMeter">
/// False when the target had published no instrument of the Kmem meter when the collection
/// ran: it has created no cache yet, or does not use Kmem.
/// </param>
/// <param name="Caches">The caches reported, in no particular order.</param>
/// <param name="PagesHeld"><c>kmem.pages.memory.held</c> (null if not reported).</param>
/// <param name="PagesCached"><c>kmem.pages.memory.cached</c>.</param>
/// <param name="PagesInUse"><c>kmem.pages.memory.in_use</c>.</param>
/// <param name="LargeKmalloc"><c>kmem.kmalloc.large.memory.in_use</c>.</param>
internal sealed record RemoteSnapshot(
    DateTime IntervalEnd,
    bool HasKmemMeter,
    IReadOnlyList<RemoteCache> Caches,
    long? PagesHeld,
    long? PagesCached,
    long? PagesInUse,
    long? LargeKmalloc);
