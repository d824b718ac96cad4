namespace Kmem;

/// <summary>
/// The grace-period sequence number, alone in its class (and so apart from the counters
/// writers update often): every outermost ReadLock reads it, only a grace period writes it.
/// </summary>
internal static class RcuGracePeriod
{
    /// <summary>Number of the last grace period started; 1 before any, so 0 can mean "not reading".</summary>
    internal static long Sequence = 1;

    /// <summary>Number of the last grace period completed (1: none yet).</summary>
    internal static long Completed = 1;
}
