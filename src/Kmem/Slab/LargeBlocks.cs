using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Kmem.PageLayer;

namespace Kmem.Slab;

/// <summary>
/// Allocations too large for a size class (the kernel's kmalloc_large): page-rounded,
/// page-granular blocks from the page layer's buddy zone, each with a separate
/// <see cref="SlabHeader"/> of kind <see cref="BlockKind.Large"/> in the page map.
/// Below the caches, so every free door (Kmalloc.Free, the deferred frees, RCU) reaches
/// it without going up through Kmalloc.
/// </summary>
internal static unsafe class LargeBlocks
{
    /// <summary>
    /// Largest size any allocation can be: a quarter of the 47-bit user address space.
    /// Larger sizes (a negative length cast to nuint, a wrapped sum) are refused before any
    /// rounding could wrap.
    /// </summary>
    public const ulong MaxSize = 1UL << 45;

    private static long s_bytes;
    private static long s_count;

    /// <summary>Bytes of large blocks live now.</summary>
    public static long Bytes => Volatile.Read(ref s_bytes);

    /// <summary>Large blocks live now.</summary>
    public static long Count => Volatile.Read(ref s_count);

    /// <summary>A block of at least <paramref name="size"/> bytes, or null with the reason. Takes no lock but the page layer's.</summary>
    public static void* TryAlloc(nuint size, bool zero, out AllocationFailure failure)
    {
        if (size > MaxSize)
        {
            failure = AllocationFailure.TooLarge;
            return null;
        }
        nuint rounded = (size + OsMemory.PageSize - 1) & ~(nuint)(OsMemory.PageSize - 1);
        void* block = Pages.AllocBlock(rounded, OsMemory.PageSize, out Pages.Refusal refusal, out bool zeroed);
        if (block == null)
        {
            failure = Pages.ToFailure(refusal);
            return null;
        }
        failure = default;
        if (zero && !zeroed)
            NativeMemory.Clear(block, rounded);   // a reused block; fresh mappings are zero already
        var h = (SlabHeader*)NativeMemory.AllocZeroed((nuint)sizeof(SlabHeader));
        h->Kind = BlockKind.Large;
        h->CacheIndex = -1;
        h->Block = (byte*)block;
        h->BlockSize = rounded;
        h->LargeSize = rounded;
        // The entry's top 16 bits are the tag: a header address must fit below them (glibc's
        // malloc on x86-64 and arm64 Linux; a heap that tags pointers, as Android's does, would not).
        if (((ulong)h >> PageMap.TagShift) != 0)
        {
            NativeMemory.Free(h);
            Pages.FreeBlock(block, rounded);
            throw new PlatformNotSupportedException($"kmalloc: the native heap returned 0x{(nint)h:x}, above the page map's 48-bit addresses");
        }
        PageMap.SetHead(block, h);   // one store: the other granules stay null (a compound page's tail)
        Interlocked.Add(ref s_bytes, (long)rounded);
        Interlocked.Increment(ref s_count);
        return block;
    }

    /// <summary>
    /// Grows the large block <paramref name="h"/> in place to hold <paramref name="size"/>
    /// bytes if the pages after it are free; false otherwise. Unaccounted blocks only (an
    /// accounted one would need its group charged for the growth: it moves instead).
    /// </summary>
    public static bool TryGrowInPlace(SlabHeader* h, nuint size)
    {
        if (size > MaxSize || h->LargeGroupId != 0)
            return false;
        nuint rounded = (size + OsMemory.PageSize - 1) & ~(nuint)(OsMemory.PageSize - 1);
        nuint old = h->BlockSize;
        if (rounded <= old || !Pages.TryGrowBlock(h->Block, old, rounded))
            return false;
        h->BlockSize = rounded;
        h->LargeSize = rounded;
        Interlocked.Add(ref s_bytes, (long)(rounded - old));
        return true;
    }

    /// <summary>Frees the large block at <paramref name="p"/> (<paramref name="h"/> from the page map), after <see cref="Check"/>.</summary>
    public static void Free(void* p, SlabHeader* h)
    {
        Check(p, h);
        if (h->LargeGroupId != 0)
            MemoryGroup.TryFromId(h->LargeGroupId)?.Uncharge((long)h->BlockSize);   // never waits: atomics and a CAS
        PageMap.ClearHead(h->Block);
        Pages.FreeBlock(h->Block, h->BlockSize);
        Interlocked.Add(ref s_bytes, -(long)h->BlockSize);
        Interlocked.Decrement(ref s_count);
        NativeMemory.Free(h);
    }

    /// <summary>
    /// Throws <see cref="SlabUsageException"/> unless <paramref name="p"/> is the start of
    /// the large block <paramref name="h"/> (which may be null: nothing is there).
    /// </summary>
    public static SlabHeader* Check(void* p, SlabHeader* h)
    {
        if (h == null)
            h = FindCovering(p);
        if (h == null || (byte*)p >= h->Block + h->BlockSize)
            ThrowUsage(p, $"kmalloc: 0x{(nint)p:x} is not held by any slab of this allocator (never allocated, already freed, or foreign memory)");
        if (p != h->Block)
            ThrowUsage(p, $"kmalloc: 0x{(nint)p:x} is not the start of an allocation: it points {(byte*)p - h->Block} bytes into the large allocation at 0x{(nint)h->Block:x}");
        return h;
    }

    /// <summary>
    /// Cold, for reports: the large block whose middle <paramref name="p"/> points into, or
    /// null. Only a block's first granule is mapped, so the page map alone says nothing there.
    /// Like any report on a racing misuse (a free of this block on another thread), it may
    /// read a header that is being freed; it never writes.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static SlabHeader* FindCovering(void* p)
    {
        SlabHeader* below = PageMap.FindBlockBelow(p, MaxSize);
        return below != null && below->Kind == BlockKind.Large && (byte*)p < below->Block + below->BlockSize ? below : null;
    }

    [DoesNotReturn]
    private static void ThrowUsage(void* p, string message) => throw new SlabUsageException("kmalloc", (nint)p, message);
}
