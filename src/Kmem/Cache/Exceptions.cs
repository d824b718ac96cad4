namespace Kmem;

/// <summary>Why an allocation failed.</summary>
public enum AllocationFailure
{
    /// <summary><see cref="Pages.Limit"/> would have been passed.</summary>
    PageLimit,
    /// <summary>A fault injected with <see cref="Pages.FailNthAllocation"/>.</summary>
    InjectedFault,
    /// <summary>The OS refused to map memory.</summary>
    OutOfMemory,
    /// <summary>The cache's constructor failed on an object of the new slab.</summary>
    ConstructorFailed,
    /// <summary>Charging the current <see cref="MemoryGroup"/> would pass its limit or an ancestor's.</summary>
    GroupLimit,
}

/// <summary>An allocation could not be satisfied; nothing was allocated.</summary>
public class SlabAllocationException : Exception
{
    public SlabAllocationException() { }
    public SlabAllocationException(string message) : base(message) { }
    public SlabAllocationException(string message, Exception inner) : base(message, inner) { }

    public SlabAllocationException(string cacheName, AllocationFailure reason, nuint bytes)
        : this(cacheName, reason, bytes, Describe(reason))
    {
    }

    /// <summary>A failure whose reason needs more words than <paramref name="reason"/> (which group, which limit).</summary>
    public SlabAllocationException(string cacheName, AllocationFailure reason, nuint bytes, string detail)
        : base($"cache '{cacheName}': cannot allocate {bytes} bytes: {detail}")
    {
        CacheName = cacheName;
        Reason = reason;
    }

    public string? CacheName { get; }
    public AllocationFailure Reason { get; }

    private static string Describe(AllocationFailure reason) => reason switch
    {
        AllocationFailure.PageLimit => $"page limit of {Pages.Limit} bytes reached ({Pages.BytesHeld} held)",
        AllocationFailure.InjectedFault => "injected page allocation fault",
        AllocationFailure.ConstructorFailed => "the constructor failed (the objects it had built are destructed by the reclaim thread)",
        AllocationFailure.GroupLimit => "a memory group's limit was reached",
        _ => "the OS refused memory",
    };
}

/// <summary>
/// The allocator was misused: a pointer it does not hold, a pointer of another cache,
/// a pointer inside an object, a double free, use after Dispose, or Dispose with live
/// objects. The operation was refused; no other object was touched.
/// </summary>
public class SlabUsageException : InvalidOperationException
{
    public SlabUsageException() { }
    public SlabUsageException(string message) : base(message) { }
    public SlabUsageException(string message, Exception inner) : base(message, inner) { }

    public SlabUsageException(string? cacheName, nint address, string message)
        : base(message)
    {
        CacheName = cacheName;
        Address = address;
    }

    /// <summary>The cache the operation was made on, if any.</summary>
    public string? CacheName { get; }

    /// <summary>The address at fault, 0 when the error is not about one address.</summary>
    public nint Address { get; }

    /// <summary>For Dispose with live objects: how many.</summary>
    public long LiveObjects { get; init; }
}
