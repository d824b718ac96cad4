using Kmem.Locking;

namespace Kmem;

/// <summary>A snapshot of a <see cref="PerCpuAllocator"/> (the kernel's /sys/kernel/debug/percpu_stats).</summary>
/// <param name="Chunks">Chunks held.</param>
/// <param name="EmptyChunks">Chunks with no live area (one is kept; more are freed by the balance work).</param>
/// <param name="Areas">Live areas.</param>
/// <param name="BytesInUse">Bytes of live areas, per CPU.</param>
/// <param name="BytesHeld">Bytes of chunk memory held from the page layer (all CPUs).</param>
/// <param name="Allocations">Areas allocated so far.</param>
/// <param name="Frees">Areas freed so far.</param>
/// <param name="FailedAllocations">Allocations refused (memory or a group's limit).</param>
/// <param name="ChunksCreated">Chunks mapped so far.</param>
/// <param name="ChunksFreed">Chunks returned so far.</param>
/// <param name="AllocMutex">pcpu_alloc_mutex: one acquisition per allocation and per balance.</param>
/// <param name="AreaLock">pcpu_lock.</param>
public readonly record struct PerCpuStatistics(
    int Chunks, int EmptyChunks, int Areas, long BytesInUse, long BytesHeld,
    long Allocations, long Frees, long FailedAllocations, long ChunksCreated, long ChunksFreed,
    LockStatistics AllocMutex, LockStatistics AreaLock);
