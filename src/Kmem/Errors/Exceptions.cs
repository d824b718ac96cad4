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
    /// <summary>The size asked for exceeds what the address space could ever hold (a wrapped size such as <c>(nuint)(-1)</c>).</summary>
    TooLarge,
}

/// <summary>
/// An allocation could not be satisfied; nothing was allocated. An
/// <see cref="OutOfMemoryException"/> (as <see cref="InsufficientMemoryException"/> is, which
/// is sealed), so <c>catch (OutOfMemoryException)</c> catches it too; <see cref="Reason"/>
/// says why.
/// </summary>
public class SlabAllocationException : OutOfMemoryException
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
        AllocationFailure.TooLarge => "the size is larger than any allocation can be",
        AllocationFailure.ConstructorFailed => "the constructor failed (the objects it had built were destructed and their slab freed)",
        AllocationFailure.GroupLimit => "a memory group's limit was reached",
        _ => "the OS refused memory",
    };
}

/// <summary>
/// The allocator was misused: a pointer it does not hold, a pointer of another cache,
/// a pointer inside an object, a double free, or <see cref="SlabCache.TryDispose"/>'s
/// refusal with live objects. The operation was refused; no other object was touched.
/// (Use after Dispose throws <see cref="ObjectDisposedException"/>.)
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

    /// <summary>For a refused dispose: how many objects are live.</summary>
    public long LiveObjects { get; init; }
}
