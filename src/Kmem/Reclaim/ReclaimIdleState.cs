namespace Kmem;

/// <summary>What the reclaim thread remembers of a cache between passes, to see it idle.</summary>
internal sealed class ReclaimIdleState
{
    public long LastActivity = -1;
    public long IdleSinceTicks;
    public bool Trimmed;
}
