namespace Kmem;

/// <summary>Who freed a slab, for the statistics.</summary>
internal enum SlabFreedBy
{
    /// <summary>Free itself, beyond the reserve of a cache without constructor or destructor.</summary>
    Free,
    /// <summary>The reclaim thread.</summary>
    Reclaim,
    /// <summary>An explicit Shrink or Dispose.</summary>
    Shrink,
    /// <summary>The allocation whose constructor failed, rolling back the slab it built (not counted: the slab never held objects).</summary>
    Rollback,
}
