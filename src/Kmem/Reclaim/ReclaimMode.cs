namespace Kmem;

/// <summary>How deep the reclaim thread goes on one cache.</summary>
internal enum ReclaimMode
{
    /// <summary>Empty slabs beyond the cache's reserve, and slabs whose RCU grace period ended.</summary>
    Excess,
    /// <summary>Everything: sheaves and barn drained, every empty slab freed (idle cache, memory pressure).</summary>
    Trim,
}

/// <summary>What one cache's reclaim work did.</summary>
/// <param name="More">Work is left for another pass.</param>
/// <param name="FreedSlabs">Slabs given back to the page layer in this call.</param>
/// <param name="Failure">What a destructor threw, if one did.</param>
/// <param name="Busy">Somebody held the cache's sheaf_drain, so nothing was done.</param>
internal readonly record struct ReclaimOutcome(bool More, long FreedSlabs, Exception? Failure, bool Busy);
