using System.Runtime.InteropServices;

namespace Kmem.Slab;

internal enum BlockKind : byte
{
    /// <summary>A slab: one block carved into equal objects of one cache.</summary>
    Slab = 1,
    /// <summary>A kmalloc allocation too large for a size class, straight from pages.</summary>
    Large = 2,
}

internal enum SlabList : byte
{
    /// <summary>Every object is out (in sheaves or with users): on no list, as in SLUB.</summary>
    Full = 0,
    /// <summary>Some objects free: on the cache's partial list.</summary>
    Partial = 1,
}

/// <summary>
/// The header of a block (struct slab). For a slab it lives in-band at the block's
/// start; for a large allocation it is a separate native descriptor. The page map
/// points every granule of the block here.
/// </summary>
/// <remarks>
/// Fields above the line are fixed while the block lives and may be read without a
/// lock; the rest (and List) belong to the owning cache's list_lock. Exactly 64 bytes,
/// one cache line: a 64 KiB slab of 64 B objects loses one object to it, not two.
/// </remarks>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct SlabHeader
{
    public BlockKind Kind;
    /// <summary>Under list_lock (its byte neighbour Kind is immutable, so sharing the word is safe).</summary>
    public SlabList List;
    /// <summary>Index of the owning cache in the cache registry; -1 for large blocks.</summary>
    public int CacheIndex;
    public byte* Block;
    public nuint BlockSize;
    /// <summary>Large blocks: bytes usable by the caller. Slabs: see <see cref="RcuCookie"/>.</summary>
    public nuint LargeSize;
    /// <summary>
    /// Objects the constructor built, counted in free-list order from the slab's first
    /// free list: all of them, except in a slab whose construction failed part-way,
    /// where only these are destructed. Set before the slab is published.
    /// </summary>
    public int Constructed;
    // ---- list_lock ----
    /// <summary>Objects not on this slab's freelist (with users or parked in sheaves).</summary>
    public int InUse;
    public void* Freelist;
    public SlabHeader* Prev;
    public SlabHeader* Next;

    /// <summary>Large blocks: the id of the memory group charged for the block (0: none), in the word slabs use for <see cref="InUse"/>.</summary>
    public int LargeGroupId
    {
        readonly get => InUse;
        set => InUse = value;
    }

    /// <summary>
    /// An empty slab of a TypesafeByRcu cache waiting for its grace period: the
    /// <see cref="Rcu.GetState"/> cookie taken when it was unlinked (under list_lock). Kept
    /// in the word large blocks use for <see cref="LargeSize"/>, so the header stays one line.
    /// </summary>
    public long RcuCookie
    {
        readonly get => (long)LargeSize;
        set => LargeSize = (nuint)value;
    }
}
