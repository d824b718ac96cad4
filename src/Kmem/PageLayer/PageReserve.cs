namespace Kmem.PageLayer;

/// <summary>
/// A few slab blocks mapped ahead for allocations that must never wait
/// (<see cref="Kmalloc.AllocNoLock(nuint, KmallocFlags)"/>), the role of the kernel's per-CPU page lists for
/// alloc_pages_nolock(). Taking one is an atomic exchange on a slot: no lock, no system
/// call, no allocation (the blocks' page-map leaves exist already). Refilled by the
/// reclaim thread, which normal slow paths kick when the reserve is short.
/// </summary>
/// <remarks>
/// Only blocks of <see cref="BlockSize"/> (64 KiB, the slab size of the kmalloc caches up
/// to 2 KiB) are kept; a cache with bigger slabs gets no new slab without waiting. The
/// blocks are counted in <see cref="Pages.BytesHeld"/> like any other.
/// </remarks>
internal static unsafe class PageReserve
{
    public const int BlockSize = 64 * 1024;
    private const int Slots = 8;

    private static readonly nint[] s_slots = new nint[Slots];
    private static int s_count;
    private static long s_taken;
    private static int s_active;

    /// <summary>Blocks in reserve now.</summary>
    public static int Count => Volatile.Read(ref s_count);

    /// <summary>Blocks taken from the reserve so far.</summary>
    public static long Taken => Volatile.Read(ref s_taken);

    /// <summary>True when a refill would add blocks: the reserve is in use and not full.</summary>
    public static bool NeedsRefill => Volatile.Read(ref s_active) != 0 && Volatile.Read(ref s_count) < Slots;

    /// <summary>
    /// Marks the reserve in use (the first AllocNoLock): only then do refills map blocks, so a
    /// process that never allocates without waiting holds no reserve.
    /// </summary>
    public static void Activate()
    {
        if (Volatile.Read(ref s_active) == 0)
            Volatile.Write(ref s_active, 1);
    }

    /// <summary>A block of <paramref name="size"/> bytes, or null. Never waits.</summary>
    public static byte* TryTake(int size)
    {
        if (size != BlockSize || Volatile.Read(ref s_count) == 0)
            return null;
        for (int i = 0; i < Slots; i++)
        {
            // An exchange, not a pop from a linked stack: no ABA, nothing to walk.
            nint block = Interlocked.Exchange(ref s_slots[i], 0);
            if (block != 0)
            {
                Interlocked.Decrement(ref s_count);
                Interlocked.Increment(ref s_taken);
                return (byte*)block;
            }
        }
        return null;
    }

    /// <summary>
    /// Maps blocks into the empty slots (may call the OS): on the reclaim thread, kicked by
    /// normal slow paths. Never past <see cref="Pages.Limit"/>: the reserve does not take
    /// the last bytes an ordinary allocation could have.
    /// </summary>
    public static void Refill()
    {
        for (int i = 0; i < Slots && NeedsRefill; i++)
        {
            if (Volatile.Read(ref s_slots[i]) != 0)
                continue;
            long limit = Pages.Limit;
            if (limit != 0 && Pages.BytesHeld + BlockSize > limit)
                return;
            void* block = Pages.AllocBlock(BlockSize, BlockSize, out _, out _);
            if (block == null)
                return;
            PageMap.Prepare(block, BlockSize);   // creates the page-map leaf now, not in the taker
            if (Interlocked.CompareExchange(ref s_slots[i], (nint)block, 0) == 0)
                Interlocked.Increment(ref s_count);
            else
                Pages.FreeBlock(block, BlockSize);
        }
    }
}
