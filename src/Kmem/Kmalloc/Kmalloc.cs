using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Kmem.PageLayer;
using Kmem.Slab;

namespace Kmem;

/// <summary>
/// General-purpose allocation by size (kmalloc): sizes up to <see cref="MaxCachedSize"/>
/// come from the kmalloc-N slab caches (the kernel's classes to 128 B, then four per
/// doubling to 256 KiB, as mimalloc's bins), larger ones from the page layer's buddy.
/// <see cref="Free"/> needs no size: the page map finds the block from the address.
/// </summary>
/// <remarks>
/// Power-of-two sizes up to 4 KiB are naturally aligned; every object is at least
/// 8-byte aligned; large allocations are page aligned.
/// </remarks>
public static unsafe partial class Kmalloc
{
    /// <summary>
    /// Largest size served from a slab cache. SLUB stops at 8 KiB because its page
    /// allocator is fast; here a 256 KiB class allocation is a sheaf pop (about 20 ns)
    /// where a page-layer block costs a lock, a split and page-map writes (about 250 ns):
    /// docs/benchmarks.md section 9.
    /// </summary>
    public const int MaxCachedSize = 256 * 1024;

    /// <summary>The largest of the kernel's classes, found through the byte table.</summary>
    private const int TableMaxSize = 8192;

    // The kernel's kmalloc size classes (kmalloc_info[]) to 128 B, then four per doubling
    // (160, 192, 224, 256, 320, ... 224 KiB, 256 KiB): at most 25% of a slot wasted, not
    // 50% as between the kernel's 256, 512 and 1024, which cost 1.22x mimalloc's RSS for
    // random sizes of 8..1024 B (docs/benchmarks.md section 9).
    private static readonly int[] s_sizes = BuildSizes();

    /// <summary>Classes up to and including 8 KiB: the first above it is this index.</summary>
    private static readonly int s_classesTo8K = Array.IndexOf(s_sizes, TableMaxSize) + 1;

    /// <summary>The kmalloc-N caches' handles (never disposed), smallest first.</summary>
    private static readonly SlabCache[] s_handles = CreateCaches(accounted: false);

    /// <summary>Their cores, which the fast paths call straight (no handle hop).</summary>
    private static readonly SlabCacheCore[] s_caches = [.. s_handles.Select(h => h.Core)];

    /// <summary>
    /// The accounted kmalloc-cg-N caches (<see cref="KmallocFlags.Account"/>), separate as the
    /// kernel's are so that charged and uncharged objects never share a slab. Their objects
    /// keep the group's id in the word after them, so they are 8-byte aligned only: natural
    /// alignment would double every power-of-two slot.
    /// </summary>
    private static readonly SlabCache[] s_accountedHandles = CreateCaches(accounted: true);

    private static readonly SlabCacheCore[] s_accounted = [.. s_accountedHandles.Select(h => h.Core)];

    /// <summary>Size class index by (size + 7) / 8, as the kernel's size_index[] table.</summary>
    private static readonly byte[] s_classOf = BuildClassTable();

    /// <summary>The kmalloc-N caches, smallest first.</summary>
    public static IReadOnlyList<SlabCache> Caches => s_handles;

    /// <summary>The accounted kmalloc-cg-N caches, smallest first.</summary>
    public static IReadOnlyList<SlabCache> AccountedCaches => s_accountedHandles;

    /// <summary>Bytes of large allocations (above <see cref="MaxCachedSize"/>) live now.</summary>
    public static long LargeBytes => LargeBlocks.Bytes;

    /// <summary>Large allocations live now.</summary>
    public static long LargeAllocations => LargeBlocks.Count;

    /// <summary>Allocates <paramref name="size"/> bytes (0 gives a unique minimal object).</summary>
    /// <exception cref="SlabAllocationException">No memory could be had.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void* Alloc(nuint size)
    {
        // One compare to the kernel's classes, as before the classes above 8 KiB: those
        // and large blocks are behind the call.
        if (size <= TableMaxSize)
            return s_caches[s_classOf[(int)((size + 7) >> 3)]].Alloc();
        return AllocAbove8K(size);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void* AllocAbove8K(nuint size) => size <= MaxCachedSize
        ? s_caches[QuarterClassOf(size)].Alloc()
        : AllocLarge(size, throwOnFailure: true, zero: false);

    /// <summary>Allocates <paramref name="size"/> bytes; false when no memory could be had.</summary>
    public static bool TryAlloc(nuint size, out void* p)
    {
        if (size <= MaxCachedSize)
            return s_caches[ClassOf(size)].TryAlloc(out p);
        p = AllocLarge(size, throwOnFailure: false, zero: false);
        return p != null;
    }

    /// <summary>Allocates <paramref name="size"/> bytes, all zero (every usable byte).</summary>
    public static void* AllocZeroed(nuint size)
    {
        if (size > MaxCachedSize)
            return AllocLarge(size, throwOnFailure: true, zero: true);
        SlabCacheCore cache = s_caches[ClassOf(size)];
        void* p = cache.Alloc();
        NativeMemory.Clear(p, (nuint)cache.UsableSize);
        return p;
    }

    /// <summary>Allocates <paramref name="size"/> bytes as <paramref name="flags"/> ask (zeroed, accounted).</summary>
    /// <exception cref="SlabAllocationException">No memory could be had, or the current group's limit refused the charge.</exception>
    public static void* Alloc(nuint size, KmallocFlags flags)
    {
        TryAllocCore(size, flags, throwOnFailure: true, out void* p);
        return p;
    }

    /// <summary>As <see cref="Alloc(nuint, KmallocFlags)"/>; false when no memory could be had or the charge was refused.</summary>
    public static bool TryAlloc(nuint size, KmallocFlags flags, out void* p) => TryAllocCore(size, flags, throwOnFailure: false, out p);

    private static bool TryAllocCore(nuint size, KmallocFlags flags, bool throwOnFailure, out void* p)
    {
        bool zero = (flags & KmallocFlags.Zero) != 0;
        if (size > MaxCachedSize)
        {
            p = (flags & KmallocFlags.Account) != 0
                ? AllocLargeAccounted(size, throwOnFailure, zero)
                : AllocLarge(size, throwOnFailure, zero);
            return p != null;
        }
        SlabCacheCore cache = ((flags & KmallocFlags.Account) != 0 ? s_accounted : s_caches)[ClassOf(size)];
        if (throwOnFailure)
            p = cache.Alloc();
        else if (!cache.TryAlloc(out p))
            return false;
        if (zero)
            NativeMemory.Clear(p, (nuint)cache.UsableSize);
        return true;
    }

    /// <summary>Frees memory from any Kmalloc call (or any slab cache object, as kfree does). Null is a no-op.</summary>
    /// <exception cref="SlabUsageException">An address this allocator does not hold, or not at an allocation's start.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Free(void* p)
    {
        if (p == null)
            return;
        // The cache comes from the entry's tag, so the slab header is not touched.
        ulong entry = PageMap.LookupEntry(p);
        uint tag = (uint)(entry >> PageMap.TagShift);
        if (tag - 1 < PageMap.EscapeTag - 1)
        {
            SlabCacheRegistry.Get((int)tag - 1).FreeObject(p, (SlabHeader*)(entry & PageMap.AddressMask));
            return;
        }
        FreeUntagged(p, (SlabHeader*)(entry & PageMap.AddressMask));
    }

    /// <summary>A large block, nothing, or a slab of a cache whose index only its header holds.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void FreeUntagged(void* p, SlabHeader* h)
    {
        if (h != null && h->Kind == BlockKind.Slab)
        {
            SlabCacheRegistry.Get(h->CacheIndex).FreeObject(p, h);
            return;
        }
        LargeBlocks.Free(p, h);
    }

    /// <summary>
    /// Frees <paramref name="p"/> after an RCU grace period (kfree_rcu): readers inside a
    /// section that began before this call may go on using it. Checked now, freed later on
    /// the RCU callback thread, allocating nothing. Null is a no-op. Accepts what
    /// <see cref="Free"/> accepts; <see cref="Rcu.Barrier"/> waits for the pending frees.
    /// </summary>
    /// <exception cref="SlabUsageException">As <see cref="Free"/>, for an address that is not an allocation's start (a double free is found only when the free runs, and recorded in <see cref="Rcu.LastFailure"/>).</exception>
    public static void FreeRcu(void* p)
    {
        if (p == null)
            return;
        SlabHeader* h = PageMap.Lookup(p);
        if (h != null && h->Kind == BlockKind.Slab)
            SlabCacheRegistry.Get(h->CacheIndex).CheckObjectStart(p, h);
        else
            LargeBlocks.Check(p, h);
        Rcu.Enqueue(new RcuWork(&FreeAfterGracePeriod, (nint)p));
    }

    /// <summary>Bytes usable at <paramref name="p"/> (at least what was asked; ksize). 0 for null.</summary>
    public static nuint UsableSize(void* p)
    {
        if (p == null)
            return 0;
        SlabHeader* h = PageMap.Lookup(p);
        if (h != null && h->Kind == BlockKind.Slab)
        {
            SlabCacheCore cache = SlabCacheRegistry.Get(h->CacheIndex);
            cache.CheckObjectStart(p, h);
            return (nuint)cache.UsableSize;
        }
        return LargeBlocks.Check(p, h)->LargeSize;
    }

    /// <summary>
    /// Resizes: null allocates, 0 frees and returns null; otherwise the contents up to the
    /// smaller size are kept. Stays in place when the new size fits and would not waste
    /// more than half. On failure throws and leaves <paramref name="p"/> allocated.
    /// </summary>
    public static void* Realloc(void* p, nuint size)
    {
        if (p == null)
            return Alloc(size);
        if (size == 0)
        {
            Free(p);
            return null;
        }
        nuint usable = UsableSize(p);
        if (size <= usable && size > usable / 2)
            return p;
        // A large block grows into free pages after it, with no copy (krealloc cannot, but
        // jemalloc and glibc's mremap do).
        if (size > usable && size > MaxCachedSize && PageMap.Lookup(p) is var h && h->Kind == BlockKind.Large && LargeBlocks.TryGrowInPlace(h, size))
            return p;
        // An accounted block stays accounted (krealloc passes its gfp on): the new one is
        // charged to the current group, the old one uncharged by its free.
        void* fresh = Alloc(size, IsAccounted(p) ? KmallocFlags.Account : KmallocFlags.None);
        Buffer.MemoryCopy(p, fresh, size, Math.Min(usable, size));
        Free(p);
        return fresh;
    }

    /// <summary>True when <paramref name="p"/> (checked by <see cref="UsableSize"/> already) is accounted memory.</summary>
    private static bool IsAccounted(void* p)
    {
        SlabHeader* h = PageMap.Lookup(p);
        return h->Kind == BlockKind.Slab ? SlabCacheRegistry.Get(h->CacheIndex).IsAccounted : h->LargeGroupId != 0;
    }

    /// <summary>
    /// Largest size any allocation can be (2^45 bytes): larger sizes, such as a negative
    /// length cast to nuint, fail with <see cref="AllocationFailure.TooLarge"/>.
    /// </summary>
    public const ulong MaxAllocationSize = LargeBlocks.MaxSize;

    private static void* AllocLarge(nuint size, bool throwOnFailure, bool zero)
    {
        // A program of large blocks only creates no cache, and the reclaim thread (which
        // purges freed pages after Pages.PurgeDelay) starts with the first cache otherwise.
        Reclaim.EnsureStarted();
        void* block = LargeBlocks.TryAlloc(size, zero, out AllocationFailure failure);
        if (block == null && failure == AllocationFailure.PageLimit)
        {
            // As a slab allocation does: let the reclaim thread free what it can, once.
            Reclaim.WaitForPressurePass();
            block = LargeBlocks.TryAlloc(size, zero, out failure);
        }
        if (block == null && throwOnFailure)
            throw new SlabAllocationException("kmalloc-large", failure, size);
        return block;
    }

    /// <summary>A large block charged to the current group (memcg_kmem_charge_page); the charge is released by <see cref="LargeBlocks.Free"/>.</summary>
    private static void* AllocLargeAccounted(nuint size, bool throwOnFailure, bool zero)
    {
        MemoryGroup? group = MemoryGroup.Current;
        if (group == null || group == MemoryGroup.Root)
            return AllocLarge(size, throwOnFailure, zero);
        void* block = AllocLarge(size, throwOnFailure, zero);
        if (block == null)
            return null;
        SlabHeader* h = PageMap.Lookup(block);
        if (group.TryCharge((long)h->BlockSize, out MemoryGroup? refusedBy))
        {
            h->LargeGroupId = group.Online().Id;
            return block;
        }
        LargeBlocks.Free(block, h);
        if (throwOnFailure)
        {
            throw new SlabAllocationException("kmalloc-large", AllocationFailure.GroupLimit, size,
                $"memory group '{refusedBy!.Name}' would pass its limit of {refusedBy.Limit} bytes (usage {refusedBy.Usage})");
        }
        return null;
    }

    /// <summary>The RCU callback of <see cref="FreeRcu"/>: a function pointer, so queuing allocates nothing and the RCU layer does not call up into Kmalloc.</summary>
    private static void FreeAfterGracePeriod(nint p) => Free((void*)p);

    private static SlabCache[] CreateCaches(bool accounted)
    {
        var caches = new SlabCache[s_sizes.Length];
        for (int i = 0; i < s_sizes.Length; i++)
        {
            int size = s_sizes[i];
            // Natural alignment for powers of two, as the kernel guarantees (up to a page);
            // 8 for the accounted caches (see s_accountedHandles).
            int align = int.IsPow2(size) && !accounted ? Math.Min(size, OsMemory.PageSize) : 8;
            // Never merged, as the kernel's hardened kmalloc caches: their statistics and
            // Free's address checks stay theirs alone.
            caches[i] = accounted
                ? SlabCache.Create($"kmalloc-cg-{size}", size, new SlabCacheOptions { Align = align, Flags = SlabFlags.NoMerge | SlabFlags.Account })
                : SlabCache.Create($"kmalloc-{size}", size, new SlabCacheOptions { Align = align, Flags = SlabFlags.NoMerge });
        }
        return caches;
    }

    /// <summary>The class of a size up to <see cref="MaxCachedSize"/>: the kernel's table to 8 KiB, then the quarter of its doubling.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int ClassOf(nuint size) => size <= TableMaxSize ? s_classOf[(int)((size + 7) >> 3)] : QuarterClassOf(size);

    /// <summary>
    /// For 8 KiB &lt; size ≤ 256 KiB: with s = size - 1 and b = log2(s), the classes of the
    /// doubling (2^b, 2^(b+1)] are (5..8) × 2^(b-2), picked by the two bits below s's top bit.
    /// </summary>
    private static int QuarterClassOf(nuint size)
    {
        nuint s = size - 1;
        int b = System.Numerics.BitOperations.Log2(s);
        return s_classesTo8K + (b - 13) * 4 + (int)((s >> (b - 2)) & 3);
    }

    private static int[] BuildSizes()
    {
        var sizes = new List<int> { 8, 16, 32, 64, 96, 128 };
        for (int b = 7; (1 << b) < MaxCachedSize; b++)
        {
            for (int q = 0; q < 4; q++)
                sizes.Add((5 + q) << (b - 2));
        }
        return [.. sizes];
    }

    private static byte[] BuildClassTable()
    {
        var table = new byte[TableMaxSize / 8 + 1];
        int c = 0;
        for (int slot = 0; slot < table.Length; slot++)
        {
            while (s_sizes[c] < slot * 8)
                c++;
            table[slot] = (byte)c;
        }
        return table;
    }
}
