using System.Numerics;
using System.Runtime.CompilerServices;

namespace Kmem.Slab;

/// <summary>
/// The geometry every slab of one cache shares: block size, where objects start, the
/// stride between them and where the free-list link lives. Chosen once per cache.
/// </summary>
internal readonly unsafe struct SlabLayout
{
    public const int MinSlabShift = 16;   // 64 KiB: one page-map granule
    public const int MaxSlabShift = 21;   // 2 MiB: at least 4 objects of the 256 KiB kmalloc class
    public const int MinObjectsPerSlab = 4;

    public readonly int SlabSize;
    public readonly int ObjectOffset;     // from the block start
    public readonly int Stride;
    public readonly int Objects;
    public readonly int FreeLinkOffset;   // within an object slot
    public readonly int BitmapOffset;     // ConsistencyChecks: allocation bitmap, else 0
    /// <summary>Lemire's divisibility constant: x % Stride == 0 ⇔ x * M ≤ M - 1 (32-bit x).</summary>
    public readonly ulong DivisibleMagic;

    private SlabLayout(int slabSize, int objectOffset, int stride, int objects, int freeLinkOffset, int bitmapOffset)
    {
        SlabSize = slabSize;
        ObjectOffset = objectOffset;
        Stride = stride;
        Objects = objects;
        FreeLinkOffset = freeLinkOffset;
        BitmapOffset = bitmapOffset;
        DivisibleMagic = ulong.MaxValue / (ulong)stride + 1;
        Span = objects * stride;
    }

    /// <summary>Bytes of the object area (Objects × Stride): a valid object offset is below this.</summary>
    public readonly int Span;

    /// <summary>
    /// Picks the smallest slab (64 KiB .. 2 MiB) whose waste, header included, is at
    /// most 1/16 of it, as SLUB's calculate_order does with its fraction.
    /// </summary>
    /// <param name="stride">Object slot size, a multiple of <paramref name="align"/>.</param>
    /// <param name="align">Object alignment, a power of two.</param>
    /// <param name="freeLinkOffset">Where the free-list link lives inside a slot.</param>
    /// <param name="withBitmap">Reserve an allocation bitmap (ConsistencyChecks).</param>
    public static SlabLayout Compute(int stride, int align, int freeLinkOffset, bool withBitmap)
    {
        System.Diagnostics.Debug.Assert(sizeof(SlabHeader) == 64, "SlabHeader outgrew its cache line");
        SlabLayout best = default;
        for (int shift = MinSlabShift; shift <= MaxSlabShift; shift++)
        {
            int size = 1 << shift;
            int header = AlignUp(sizeof(SlabHeader), 64);
            int bitmapOffset = 0;
            if (withBitmap)
            {
                bitmapOffset = header;
                header += AlignUp((size / stride + 7) / 8, 8);
            }
            int offset = AlignUp(header, Math.Max(align, 8));
            int objects = (size - offset) / stride;
            if (objects < 1)
                continue;
            var layout = new SlabLayout(size, offset, stride, objects, freeLinkOffset, bitmapOffset);
            int waste = size - offset - objects * stride;
            best = layout;
            if (objects >= MinObjectsPerSlab && waste * 16 <= size)
                break;
        }
        if (best.Objects < MinObjectsPerSlab)
            throw new ArgumentOutOfRangeException(nameof(stride), stride, "object too large for a slab");
        return best;
    }

    /// <summary>True when <paramref name="offset"/> (below 2^32) is a multiple of the stride.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsObjectBoundary(uint offset) => offset * DivisibleMagic <= DivisibleMagic - 1;

    /// <summary>True when <paramref name="obj"/> is the start of an object slot of <paramref name="slab"/> (one subtract, compare, multiply).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsObjectStart(void* obj, SlabHeader* slab)
    {
        uint offset = (uint)((byte*)obj - (byte*)slab - ObjectOffset);
        return offset < (uint)Span && IsObjectBoundary(offset);
    }

    public static int AlignUp(int value, int align) => (value + align - 1) & ~(align - 1);

    public static bool IsPowerOfTwo(int value) => value > 0 && BitOperations.IsPow2(value);
}
