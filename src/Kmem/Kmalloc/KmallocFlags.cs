namespace Kmem;

/// <summary>What an allocation by size asks for besides its bytes (the kernel's gfp flags that Kmem has).</summary>
[Flags]
public enum KmallocFlags
{
    /// <summary>Plain memory, charged to nobody.</summary>
    None = 0,

    /// <summary>Every usable byte zero (__GFP_ZERO).</summary>
    Zero = 1,

    /// <summary>
    /// Charged to the calling thread's <see cref="MemoryGroup"/> and uncharged when freed,
    /// whichever thread and door frees it (__GFP_ACCOUNT): served from the separate
    /// kmalloc-cg-N caches, as the kernel's, whose objects carry the group's id after them.
    /// Over the group's limit the allocation fails with <see cref="AllocationFailure.GroupLimit"/>.
    /// </summary>
    Account = 2,
}
