using System.Diagnostics;
using System.Numerics;

namespace Kmem.PerCpu;

/// <summary>
/// One chunk of per-CPU memory (<c>struct pcpu_chunk</c>): a block holding one unit per
/// possible CPU, and the area map that allocates offsets inside a unit. An area at
/// offset <c>o</c> is the bytes at <c>o</c> in every unit.
/// </summary>
/// <remarks>
/// The map is mm/percpu.c's pair of bitmaps over 4-byte granules: <c>alloc_map</c> marks
/// allocated granules; <c>bound_map</c> marks the first granule of every area and the
/// granule just past it, so a free finds an area's size from its start alone. Every
/// method but <see cref="LiveAreaBits"/> and <see cref="ChargeRecord"/> runs under the
/// allocator's <c>pcpu_lock</c>.
/// </remarks>
internal sealed unsafe class PerCpuChunk
{
    public const int Granule = 4;
    public const int Bits = PerCpuAllocator.UnitSize / Granule;
    private const int Words = Bits / 64;
    /// <summary>Granules a free looks at on each side to update the contiguity hint.</summary>
    private const int HintReach = 256;

    private readonly ulong[] _alloc = new ulong[Words];
    private readonly ulong[] _bound = new ulong[Words + 1];
    private long[]? _charges;

    public PerCpuChunk(PerCpuAllocator owner, byte* block, nuint blockSize)
    {
        Owner = owner;
        Base = block;
        BlockSize = blockSize;
    }

    public PerCpuAllocator Owner { get; }

    /// <summary>CPU 0's unit; CPU c's is <see cref="PerCpuAllocator.UnitSize"/> × c further.</summary>
    public byte* Base { get; }

    public nuint BlockSize { get; }

    public int FreeBits { get; private set; } = Bits;

    /// <summary>At least the longest free run (an upper bound: it may overstate, never understate).</summary>
    public int ContigHint { get; private set; } = Bits;

    /// <summary>No free granule lies below this one.</summary>
    private int _firstFree;

    public int Areas { get; private set; }

    /// <summary>Unlinked by balance: its memory is gone or going. Under pcpu_lock.</summary>
    public bool Dead { get; set; }

    public bool IsEmpty => FreeBits == Bits;

    public bool Contains(nint address) => address >= (nint)Base && address < (nint)Base + PerCpuAllocator.UnitSize;

    /// <summary>First fit of <paramref name="bits"/> granules aligned to <paramref name="alignBits"/>; the granule offset, or -1.</summary>
    public int TryAllocate(int bits, int alignBits)
    {
        if (bits > ContigHint || bits > FreeBits)
            return -1;
        int start = _firstFree;
        while (true)
        {
            int runStart = NextClear(_alloc, start);
            int aligned = (runStart + alignBits - 1) & ~(alignBits - 1);
            if (aligned + bits > Bits)
                break;
            // Look only as far as the area needs: the first allocated granule in the way, if any.
            int blocked = NextSet(_alloc, runStart, aligned + bits);
            if (blocked == aligned + bits)
            {
                Mark(aligned, bits);
                return aligned;
            }
            start = blocked + 1;
        }
        // The map was searched from the first free granule: make the hint exact.
        ContigHint = LongestFreeRun();
        return -1;
    }

    private int LongestFreeRun()
    {
        int longest = 0;
        for (int start = NextClear(_alloc, 0); start < Bits;)
        {
            int end = NextSet(_alloc, start, Bits);
            longest = Math.Max(longest, end - start);
            start = NextClear(_alloc, end);
        }
        return longest;
    }

    private void Mark(int bit, int bits)
    {
        SetRange(_alloc, bit, bits);
        SetBit(_bound, bit);
        ClearRange(_bound, bit + 1, bits - 1);
        SetBit(_bound, bit + bits);
        FreeBits -= bits;
        Areas++;
        if (bit == _firstFree)
            _firstFree = NextClear(_alloc, bit + bits);
        Debug.Assert(FreeBits >= 0 && _firstFree <= Bits, "percpu area map out of balance");
    }

    /// <summary>Why a granule cannot be freed: 0 when it starts a live area.</summary>
    public string? CheckAreaStart(int bit)
    {
        if (!TestBit(_alloc, bit))
            return "is not allocated (already freed?)";
        if (!TestBit(_bound, bit))
            return "points inside an area, not at its start";
        return null;
    }

    /// <summary>Frees the live area starting at <paramref name="bit"/> (checked by <see cref="CheckAreaStart"/>); returns its granules.</summary>
    public int Free(int bit)
    {
        Debug.Assert(CheckAreaStart(bit) == null, "freeing what is not an area start");
        int bits = NextSet(_bound, bit + 1, Bits + 1) - bit;
        ClearRange(_alloc, bit, bits);
        FreeBits += bits;
        Areas--;
        _firstFree = Math.Min(_firstFree, bit);
        // The free run now holding this area may join free neighbours on both sides. Look
        // a few words each way; past that, assume the run goes on (the hint may overstate).
        int before = bit <= HintReach ? 0 : PrevSet(_alloc, bit - 1, bit - HintReach) + 1;
        int after = NextSet(_alloc, bit + bits, Math.Min(Bits, bit + bits + HintReach));
        if (after == bit + bits + HintReach)
            after = Bits;
        ContigHint = Math.Max(ContigHint, after - before);
        Debug.Assert(FreeBits <= Bits && Areas >= 0, "percpu area map out of balance");
        return bits;
    }

    /// <summary>
    /// Granules of the live area at <paramref name="bit"/>, read without pcpu_lock: its own
    /// bound bits cannot change while it is live, and 64-bit reads do not tear.
    /// </summary>
    public int LiveAreaBits(int bit) => NextSet(_bound, bit + 1, Bits + 1) - bit;

    /// <summary>
    /// The charge of an area, kept per granule as the kernel's <c>obj_exts</c>: the
    /// memory-group id over the bytes charged (0: none). Only the area's owner (its
    /// allocation, charge, uncharge) touches its record, but for the free, which takes it
    /// under pcpu_lock before the granules can be handed out again.
    /// </summary>
    public ref long ChargeRecord(int bit)
    {
        long[]? records = Volatile.Read(ref _charges);
        if (records == null)
        {
            Interlocked.CompareExchange(ref _charges, new long[Bits], null);
            records = _charges!;
        }
        return ref records[bit];
    }

    /// <summary>The area's charge record (0 if none), cleared.</summary>
    public long TakeCharge(int bit)
    {
        long[]? records = Volatile.Read(ref _charges);
        if (records == null)
            return 0;
        long record = records[bit];
        records[bit] = 0;
        return record;
    }

    public static long PackCharge(int groupId, long bytes) => ((long)groupId << 32) | bytes;

    public static int ChargedGroup(long record) => (int)(record >>> 32);

    public static long ChargedBytes(long record) => record & uint.MaxValue;

    private static bool TestBit(ulong[] map, int bit) => (map[bit >> 6] & (1UL << bit)) != 0;

    private static void SetBit(ulong[] map, int bit) => map[bit >> 6] |= 1UL << bit;

    private static void SetRange(ulong[] map, int bit, int count)
    {
        for (int i = bit; i < bit + count; i++)
            map[i >> 6] |= 1UL << i;
    }

    private static void ClearRange(ulong[] map, int bit, int count)
    {
        for (int i = bit; i < bit + count; i++)
            map[i >> 6] &= ~(1UL << i);
    }

    /// <summary>The first clear bit at or after <paramref name="from"/>; <see cref="Bits"/> if none.</summary>
    private static int NextClear(ulong[] map, int from)
    {
        for (int w = from >> 6; w < Words; w++)
        {
            ulong free = ~map[w];
            if (w == from >> 6)
                free &= ulong.MaxValue << (from & 63);
            if (free != 0)
                return Math.Min(Bits, (w << 6) + BitOperations.TrailingZeroCount(free));
        }
        return Bits;
    }

    /// <summary>The first set bit in [<paramref name="from"/>, <paramref name="limit"/>); <paramref name="limit"/> if none.</summary>
    private static int NextSet(ulong[] map, int from, int limit)
    {
        for (int w = from >> 6; w < map.Length && (w << 6) < limit; w++)
        {
            ulong set = map[w];
            if (w == from >> 6)
                set &= ulong.MaxValue << (from & 63);
            if (set != 0)
                return Math.Min(limit, (w << 6) + BitOperations.TrailingZeroCount(set));
        }
        return limit;
    }

    /// <summary>The last set bit in [<paramref name="floor"/>, <paramref name="from"/>]; <paramref name="floor"/> - 1 if none.</summary>
    private static int PrevSet(ulong[] map, int from, int floor)
    {
        for (int w = from >> 6; w >= floor >> 6; w--)
        {
            ulong set = map[w];
            if (w == from >> 6)
                set &= ulong.MaxValue >> (63 - (from & 63));
            if (set != 0)
                return Math.Max(floor - 1, (w << 6) + 63 - BitOperations.LeadingZeroCount(set));
        }
        return floor - 1;
    }
}
