namespace Kmem;

/// <summary>Cache flags, after SLAB_* in include/linux/slab.h.</summary>
[Flags]
public enum SlabFlags
{
    /// <summary>No flag: a plain cache, mergeable with a compatible one.</summary>
    None = 0,
    /// <summary>Align objects to a cache line (halved while the object fits in half, as SLUB does).</summary>
    HwCacheAlign = 1 << 0,
    /// <summary>
    /// SLAB_TYPESAFE_BY_RCU: objects may be reused at once, but a slab's memory goes back to
    /// the page layer (and its destructor runs) only after an RCU grace period, so a reader
    /// inside <see cref="Rcu.ReadLock"/> always finds an object of this cache at an address
    /// it loaded, though maybe another identity: take the object's own lock, then re-check
    /// its key. The free-list link lives after the object; never merged.
    /// </summary>
    TypesafeByRcu = 1 << 1,
    /// <summary>
    /// Charge each object to the allocating thread's <see cref="MemoryGroup"/> (its slot
    /// size) and uncharge it at free (SLAB_ACCOUNT). An allocation that would pass a
    /// group's limit fails with <see cref="AllocationFailure.GroupLimit"/>. Costs 8 bytes
    /// per object for the group id, kept outside the object.
    /// </summary>
    Account = 1 << 2,
    /// <summary>Red zones around objects. Not implemented yet: <see cref="SlabCache.Create"/> throws <see cref="NotSupportedException"/>.</summary>
    RedZone = 1 << 3,
    /// <summary>Poison free objects. Not implemented yet: <see cref="SlabCache.Create"/> throws <see cref="NotSupportedException"/>.</summary>
    Poison = 1 << 4,
    /// <summary>Record the allocating and freeing caller. Not implemented yet: <see cref="SlabCache.Create"/> throws <see cref="NotSupportedException"/>.</summary>
    StoreUser = 1 << 5,
    /// <summary>
    /// Check every free against an allocation bitmap: double frees and free-list
    /// corruption are caught. Objects bypass the per-thread sheaves (as SLUB's debug
    /// caches bypass the per-CPU fast path), so this costs a lock per operation.
    /// </summary>
    ConsistencyChecks = 1 << 6,
    /// <summary>
    /// Link the objects of each new slab in a random order (CONFIG_SLAB_FREELIST_RANDOM),
    /// so the next object's address cannot be guessed from the last one's. The constructor
    /// runs in that order.
    /// </summary>
    RandomizeFreelist = 1 << 7,
    /// <summary>Never merge this cache with another (see <see cref="SlabCache.MergedInto"/>).</summary>
    NoMerge = 1 << 8,
}
