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
    /// <summary>A failure with a default message and no cache or reason (<see cref="Reason"/> is <see cref="AllocationFailure.PageLimit"/>, the default).</summary>
    public SlabAllocationException() { }

    /// <summary>A failure described by <paramref name="message"/>, with no cache or reason.</summary>
    public SlabAllocationException(string message) : base(message) { }

    /// <summary>A failure described by <paramref name="message"/>, caused by <paramref name="inner"/>.</summary>
    public SlabAllocationException(string message, Exception inner) : base(message, inner) { }

    /// <summary>
    /// <paramref name="cacheName"/> could not allocate <paramref name="bytes"/> bytes for
    /// <paramref name="reason"/>; the message says so in words. For code that wraps Kmem
    /// (a cache of its own) and wants to fail as Kmem does.
    /// </summary>
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

    /// <summary>The cache (or allocator: "kmalloc-64", a per-CPU allocator's name) that failed; null when not given.</summary>
    public string? CacheName { get; }

    /// <summary>Why: a limit, an injected fault, the OS, a constructor, a memory group, or a size no allocation can have.</summary>
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
    /// <summary>A misuse with a default message, no cache and no address.</summary>
    public SlabUsageException() { }

    /// <summary>A misuse described by <paramref name="message"/>, with no cache and no address.</summary>
    public SlabUsageException(string message) : base(message) { }

    /// <summary>A misuse described by <paramref name="message"/>, caused by <paramref name="inner"/>.</summary>
    public SlabUsageException(string message, Exception inner) : base(message, inner) { }

    /// <summary>A misuse of <paramref name="cacheName"/> (null for none) at <paramref name="address"/> (0 for none).</summary>
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
