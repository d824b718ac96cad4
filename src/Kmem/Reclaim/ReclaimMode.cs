namespace Kmem;

/// <summary>How deep the reclaim thread goes on one cache.</summary>
internal enum ReclaimMode
{
    /// <summary>Empty slabs beyond the cache's reserve, and slabs whose RCU grace period ended.</summary>
    Excess,
    /// <summary>Everything: sheaves and barn drained, every empty slab freed (idle cache, memory pressure).</summary>
    Trim,
}
