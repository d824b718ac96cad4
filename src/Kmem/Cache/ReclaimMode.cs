namespace Kmem;

/// <summary>How deep the reclaim thread goes on one cache.</summary>
internal enum ReclaimMode
{
    /// <summary>Slabs of failed construction, and empty slabs beyond the cache's reserve.</summary>
    Excess,
    /// <summary>Everything: sheaves and barn drained, every empty slab freed (idle cache, memory pressure).</summary>
    Trim,
}

/// <summary>What the reclaim thread remembers of a cache between passes, to see it idle.</summary>
internal sealed class ReclaimIdleState
{
    public long LastActivity = -1;
    public long IdleSinceTicks;
    public bool Trimmed;
}
