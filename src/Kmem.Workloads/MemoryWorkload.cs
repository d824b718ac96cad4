namespace Kmem.Workloads;

/// <summary>What live objects cost in memory, and what stays after they are freed and the cache shrunk.</summary>
public sealed record MemoryFootprint(long Objects, int ObjectSize, long BytesWhileLive, long BytesAfterShrink)
{
    public long Payload => Objects * ObjectSize;
    public double OverheadPercent => 100.0 * (BytesWhileLive - Payload) / Payload;
}

public static unsafe class MemoryWorkload
{
    /// <summary>
    /// Allocates <paramref name="objects"/> objects of <paramref name="size"/> bytes from
    /// a fresh cache, touches each, and reads the slab bytes held; then frees them all,
    /// shrinks, and reads again.
    /// </summary>
    public static MemoryFootprint Run(long objects, int size)
    {
        using var cache = SlabCache.Create($"footprint-{size}", size);
        var held = new nint[objects];
        for (long i = 0; i < objects; i++)
        {
            var p = (long*)cache.Alloc();
            *p = i;
            held[i] = (nint)p;
        }
        long live = cache.GetStatistics().BytesHeld;
        for (long i = 0; i < objects; i++)
        {
            if (*(long*)held[i] != i)
                throw new InvalidOperationException($"object {i} corrupted");
            cache.Free((void*)held[i]);
        }
        cache.Shrink();
        long after = cache.GetStatistics().BytesHeld;
        return new MemoryFootprint(objects, size, live, after);
    }
}
