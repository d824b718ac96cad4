using System.Runtime.InteropServices;

namespace Kmem.PageLayer;

/// <summary>
/// Naturally aligned anonymous mappings straight from the OS. On Linux this is
/// mmap/munmap, so a freed block really leaves the process (RSS and VMA); elsewhere
/// it falls back to NativeMemory.AlignedAlloc.
/// </summary>
internal static unsafe partial class OsMemory
{
    public const int PageSize = 4096;

    private const int ProtRead = 1, ProtWrite = 2;
    private const int MapPrivate = 0x02, MapAnonymous = 0x20, MapNoReserve = 0x4000;
    private const int MadvDontNeed = 4, MadvFree = 8;

    /// <summary>
    /// The purge's advice: MADV_DONTNEED (RSS drops at once, pages read as zero after), or
    /// with <c>KMEM_PURGE_ADVICE=free</c> MADV_FREE (the kernel takes the pages only under
    /// memory pressure; until then RSS keeps them and they keep their bytes). For
    /// measurement: docs/benchmarks.md section 9 compares the two.
    /// </summary>
    internal static readonly bool PurgeWithFree = Environment.GetEnvironmentVariable("KMEM_PURGE_ADVICE") == "free";

    /// <summary>Tests: the next this many mappings fail as the OS would at vm.max_map_count (ENOMEM). Process-wide.</summary>
    internal static int FailMaps;

    private static readonly bool s_useMmap = OperatingSystem.IsLinux();

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static partial nint Mmap(nint addr, nuint length, int prot, int flags, int fd, nint offset);

    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
    private static partial int Munmap(nint addr, nuint length);

    [LibraryImport("libc", EntryPoint = "madvise", SetLastError = true)]
    private static partial int Madvise(nint addr, nuint length, int advice);

    /// <summary>
    /// Reserves an arena: <paramref name="size"/> bytes (a power of two) aligned to their
    /// size, read-write, MAP_NORESERVE: pages become resident when first written and cost
    /// no commit charge before (under the default heuristic overcommit). One mapping.
    /// </summary>
    public static void* Reserve(nuint size) => MapAligned(size, size, MapNoReserve);

    /// <summary>
    /// Gives the pages of [<paramref name="block"/>, + <paramref name="size"/>) back to the OS
    /// (MADV_DONTNEED: resident memory drops now, and the pages read as zero when next
    /// touched), keeping the address space. False if the OS refused; the pages stay as they were.
    /// </summary>
    public static bool Purge(void* block, nuint size)
    {
        if (!s_useMmap)
            return false;
        return Madvise((nint)block, size, PurgeWithFree ? MadvFree : MadvDontNeed) == 0;
    }

    /// <summary>
    /// Maps <paramref name="size"/> bytes aligned to <paramref name="align"/> (a power of
    /// two). Returns null when the OS refuses. Both must be multiples of the page size.
    /// </summary>
    public static void* Map(nuint size, nuint align) => MapAligned(size, align, 0);

    private static void* MapAligned(nuint size, nuint align, int extraFlags)
    {
        if (FailMaps > 0 && Interlocked.Decrement(ref FailMaps) >= 0)
            return null;
        if (!s_useMmap)
        {
            try { return NativeMemory.AlignedAlloc(size, align); }
            catch (OutOfMemoryException) { return null; }
        }

        // Over-map by (align - page) and trim both ends: the kernel gives page
        // alignment only, and a block must never share a page-map granule with another.
        nuint extra = align > PageSize ? align - PageSize : 0;
        if (size == 0 || size > nuint.MaxValue - extra)
            return null;   // the over-mapped length would wrap
        nuint length = size + extra;
        nint raw = Mmap(0, length, ProtRead | ProtWrite, MapPrivate | MapAnonymous | extraFlags, -1, 0);
        if (raw == -1)
            return null;
        nuint start = ((nuint)raw + align - 1) & ~(align - 1);
        nuint head = start - (nuint)raw;
        nuint tail = extra - head;
        // Trimming splits the mapping, which needs a VMA of its own and so can fail
        // (ENOMEM at vm.max_map_count). Then what is left of the mapping goes back and the
        // block is refused, rather than left mapped and untracked past its end. That
        // munmap needs no split unless the kernel merged the mapping with an adjacent
        // anonymous one; then it can fail too, and the range stays reserved (address space
        // only: never touched, so never resident). This runs once per arena or dedicated
        // block, not per allocation.
        if (head != 0 && Munmap(raw, head) != 0)
        {
            Munmap(raw, length);
            return null;
        }
        if (tail != 0 && Munmap((nint)(start + size), tail) != 0)
        {
            Munmap((nint)start, size + tail);
            return null;
        }
        return (void*)start;
    }

    public static void Unmap(void* block, nuint size)
    {
        if (!s_useMmap)
        {
            NativeMemory.AlignedFree(block);
            return;
        }
        int rc = Munmap((nint)block, size);
        // munmap of a range we mapped cannot fail short of memory corruption.
        System.Diagnostics.Debug.Assert(rc == 0, "munmap failed");
    }
}
