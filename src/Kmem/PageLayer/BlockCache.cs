using System.Diagnostics;

namespace Kmem.PageLayer;

/// <summary>
/// Recently freed blocks kept mapped for reuse, by size in pages (the role of the
/// buddy allocator's per-CPU page lists): a slab or large kmalloc freed and wanted again
/// soon costs no mmap, munmap or page faults. Bounded (<see cref="MaxBytes"/>, and
/// <see cref="MaxPerSize"/> per size); trimmed by SlabCache.Shrink/Dispose and when
/// the page limit is reached. Cached bytes still count as held from the OS.
/// </summary>
/// <remarks>
/// Invariant: a cached block of a power-of-two size of 64 KiB or more is aligned to its
/// size, so it can serve any request of that size. The lock (class page_cache) is a
/// leaf: nothing is taken under it, and munmap runs outside it.
/// </remarks>
internal static unsafe class BlockCache
{
    public const int MaxPages = 256;           // blocks up to 1 MiB are cached
    public const int MaxPerSize = 16;
    public const long MaxBytes = 8L << 20;

    private static readonly Kmem.Locking.LeafSpinLock s_lock = new("page_cache");
    private static readonly nint[][] s_blocks = new nint[MaxPages + 1][];
    private static readonly int[] s_counts = new int[MaxPages + 1];
    private static long s_bytes;

    /// <summary>Bytes of blocks cached now.</summary>
    public static long Bytes => Volatile.Read(ref s_bytes);

    public static bool IsCacheable(nuint size) => size / OsMemory.PageSize <= MaxPages;

    /// <summary>Bytes of cached blocks of exactly <paramref name="size"/> bytes now (racy read, for tests).</summary>
    public static long BytesOfSize(nuint size)
    {
        int pages = (int)(size / OsMemory.PageSize);
        return pages <= MaxPages ? (long)Volatile.Read(ref s_counts[pages]) * (long)size : 0;
    }

    public static void* TryTake(nuint size)
    {
        int pages = (int)(size / OsMemory.PageSize);
        using (s_lock.Scope())
        {
            if (s_counts[pages] == 0)
                return null;
            s_bytes -= (long)size;
            return (void*)s_blocks[pages][--s_counts[pages]];
        }
    }

    public static bool TryPut(void* block, nuint size)
    {
        Debug.Assert(!nuint.IsPow2(size) || size < PageMap.GranuleSize || ((nuint)block & (size - 1)) == 0,
            "a cached power-of-two block must be naturally aligned");
        int pages = (int)(size / OsMemory.PageSize);
        using (s_lock.Scope())
        {
            if (s_counts[pages] == MaxPerSize || s_bytes + (long)size > MaxBytes)
                return false;
            (s_blocks[pages] ??= new nint[MaxPerSize])[s_counts[pages]++] = (nint)block;
            s_bytes += (long)size;
            return true;
        }
    }

    /// <summary>Takes every cached block out; the caller unmaps them.</summary>
    public static List<(nint Block, nuint Size)> TakeAll()
    {
        var all = new List<(nint, nuint)>();
        using (s_lock.Scope())
        {
            for (int pages = 1; pages <= MaxPages; pages++)
            {
                for (; s_counts[pages] > 0; s_counts[pages]--)
                    all.Add((s_blocks[pages][s_counts[pages] - 1], (nuint)pages * OsMemory.PageSize));
            }
            s_bytes = 0;
        }
        return all;
    }
}
