namespace Kmem;

/// <summary>How deep the reclaim thread goes on one cache.</summary>
internal enum ReclaimMode
{
    /// <summary>Slabs of failed construction, and empty slabs beyond the cache's reserve.</summary>
    Excess,
    /// <summary>Everything: sheaves and barn drained, every empty slab freed (idle cache, memory pressure).</summary>
    Trim,
}
