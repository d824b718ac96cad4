using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Kmem.Slab;

namespace Kmem.PageLayer;

/// <summary>
/// Address → slab header in O(1) and without any lock: a two-level radix table over
/// the 4 KiB pages of the 48-bit user address space (the role of struct page /
/// virt_to_slab in the kernel). Every block the page layer hands out is page aligned
/// and page granular, so a page belongs to at most one block.
/// </summary>
/// <remarks>
/// Invariants: an entry is non-null exactly while its granule lies inside a live slab,
/// or is the first granule of a live large block (the head of a compound page: a large
/// block's other granules stay null, so mapping one costs one store whatever its size,
/// and a pointer into its middle is diagnosed by the cold <see cref="FindBlockBelow"/>);
/// entries are written only by the thread that maps or unmaps that block; leaves are installed with a CAS and never freed (a leaf covers 1 GiB: 2 MiB of
/// zero-filled virtual memory, resident only where written: 8 bytes per page in use).
/// </remarks>
internal static unsafe class PageMap
{
    /// <summary>
    /// An entry is the header's address (below 2^48) with a tag in its top 16 bits: for a
    /// slab, its cache's index + 1 (<see cref="EscapeTag"/> when the index does not fit, and
    /// the header has it), for a large block 0. The free fast path reads the cache from
    /// the entry it loaded anyway, and never touches the slab header (a cache miss per free
    /// for big objects, whose headers are megabytes apart).
    /// </summary>
    public const int TagShift = 48;
    public const ulong AddressMask = (1UL << TagShift) - 1;
    public const uint EscapeTag = 0xFFFF;

    /// <summary>The tag of a slab of the cache at <paramref name="cacheIndex"/>.</summary>
    public static uint SlabTag(int cacheIndex) => (uint)cacheIndex < EscapeTag - 1 ? (uint)cacheIndex + 1 : EscapeTag;

    public const int GranuleShift = 12;
    public const nuint GranuleSize = (nuint)1 << GranuleShift;
    private const int LeafShift = 30;
    private const int LeafBits = LeafShift - GranuleShift;
    private const int RootBits = 48 - LeafShift;

    private static readonly SlabHeader*** s_root =
        (SlabHeader***)NativeMemory.AllocZeroed((nuint)(1 << RootBits), (nuint)sizeof(nint));

    /// <summary>The header of the block holding <paramref name="p"/>, or null if no block does.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SlabHeader* Lookup(void* p) => (SlabHeader*)(LookupEntry(p) & AddressMask);

    /// <summary>The tagged entry of <paramref name="p"/>'s granule (0 if none): header address | tag &lt;&lt; <see cref="TagShift"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong LookupEntry(void* p)
    {
        // Hot path: two dependent loads, no lock, no atomic.
        ulong a = (ulong)p;
        if ((a >> 48) != 0)
            return 0;
        SlabHeader** leaf = s_root[a >> LeafShift];
        if (leaf == null)
            return 0;
        return (ulong)leaf[(a >> GranuleShift) & ((1u << LeafBits) - 1)];
    }

    /// <summary>Maps every granule of a slab to its header, tagged with <paramref name="tag"/> (<see cref="SlabTag"/>).</summary>
    public static void Set(void* block, nuint size, SlabHeader* header, uint tag)
    {
        Debug.Assert(((nuint)block & (GranuleSize - 1)) == 0, "block not granule aligned");
        Debug.Assert(((ulong)header >> TagShift) == 0 && tag <= EscapeTag, "header or tag out of range");
        Fill((nuint)block, size, (nint)((ulong)header | ((ulong)tag << TagShift)), create: true);
    }

    /// <summary>Creates the leaves that cover [block, block + size) (a reserve block, formatted later by a thread that must not allocate).</summary>
    public static void Prepare(void* block, nuint size) => Fill((nuint)block, size, 0, create: true);

    public static void Clear(void* block, nuint size) => Fill((nuint)block, size, 0, create: false);

    /// <summary>Maps only the first granule of <paramref name="block"/> to <paramref name="header"/> (a large block's head).</summary>
    public static void SetHead(void* block, SlabHeader* header)
    {
        Debug.Assert(((nuint)block & (GranuleSize - 1)) == 0, "block not granule aligned");
        SlabHeader** entry = Entry((nuint)block, create: true);
        Debug.Assert(*entry == null, "granule already mapped");
        *entry = header;
    }

    /// <summary>Unmaps the first granule of <paramref name="block"/> (see <see cref="SetHead"/>).</summary>
    public static void ClearHead(void* block) => *Entry((nuint)block, create: false) = null;

    /// <summary>
    /// Cold (error reports only): the header of the nearest mapped granule at or below
    /// <paramref name="p"/>, looking back at most <paramref name="maxBytes"/>, or null. For a
    /// pointer into a large block's middle, whose own granule is null, that is the block's
    /// head; the caller checks that the block really covers <paramref name="p"/>.
    /// </summary>
    public static SlabHeader* FindBlockBelow(void* p, ulong maxBytes)
    {
        ulong a = (ulong)p;
        if ((a >> 48) != 0)
            return null;
        ulong floor = a > maxBytes ? a - maxBytes : 0;
        while (true)
        {
            SlabHeader** leaf = s_root[a >> LeafShift];
            ulong leafBase = a & ~((1UL << LeafShift) - 1);
            if (leaf != null)
            {
                int index = (int)((a >> GranuleShift) & ((1u << LeafBits) - 1));
                int found = new ReadOnlySpan<nint>(leaf, index + 1).LastIndexOfAnyExcept((nint)0);
                if (found >= 0)
                    return leafBase + ((ulong)found << GranuleShift) >= floor ? (SlabHeader*)((ulong)leaf[found] & AddressMask) : null;
            }
            if (leafBase == 0 || leafBase - 1 < floor)
                return null;
            a = leafBase - 1;
        }
    }

    /// <summary>Writes <paramref name="entry"/> into every page entry of the block, a leaf's run at a time.</summary>
    private static void Fill(nuint start, nuint size, nint entry, bool create)
    {
        nuint end = start + size;
        for (nuint g = start; g < end;)
        {
            SlabHeader** first = Entry(g, create);
            // Entries up to the end of this leaf (1 GiB) or of the block, whichever is first.
            nuint leafEnd = (g | (((nuint)1 << LeafShift) - 1)) + 1;
            nuint stop = end < leafEnd ? end : leafEnd;
            int count = (int)((stop - g) >> GranuleShift);
            var run = new Span<nint>(first, count);
            Debug.Assert(entry == 0 || run.IndexOfAnyExcept((nint)0) < 0, "granule already mapped");
            run.Fill(entry);
            g = stop;
        }
    }

    private static SlabHeader** Entry(nuint address, bool create)
    {
        ulong a = address;
        Debug.Assert((a >> 48) == 0, "address beyond 48 bits");
        SlabHeader*** slot = s_root + (a >> LeafShift);
        SlabHeader** leaf = *slot;
        if (leaf == null)
        {
            Debug.Assert(create, "clearing a granule that was never mapped");
            var fresh = (SlabHeader**)NativeMemory.AllocZeroed((nuint)(1 << LeafBits), (nuint)sizeof(nint));
            leaf = (SlabHeader**)Interlocked.CompareExchange(ref *(nint*)slot, (nint)fresh, 0);
            if (leaf == null)
                leaf = fresh;
            else
                NativeMemory.Free(fresh);
        }
        return leaf + ((a >> GranuleShift) & ((1u << LeafBits) - 1));
    }
}
