using System.Diagnostics;
using System.Numerics;
using System.Runtime.InteropServices;

namespace Kmem.PageLayer;

/// <summary>
/// One arena: a naturally aligned region of address space reserved in one mapping, and
/// the buddy allocator's metadata for its pages (the kernel's zone and struct pages, off
/// to the side so that a free or purged page is never touched).
/// </summary>
/// <remarks>
/// Invariants (all under the zone lock):
/// <list type="bullet">
/// <item>Base % (Pages * PageSize) == 0; Pages == 1 &lt;&lt; MaxOrder.</item>
/// <item>HeadOrder[i] == k exactly when page i heads a free block of 2^k pages, which is
/// then on FreeList[k]; i % 2^k == 0. Every other page: HeadOrder[i] == NotHead.</item>
/// <item>NonEmpty bit k == (FreeList[k] != -1).</item>
/// <item>Dirty bit i: page i may be resident (handed out, or freed and not purged since).
/// Σ dirty pages over all arenas × PageSize + dedicated bytes == Pages.BytesHeld.</item>
/// </list>
/// </remarks>
internal sealed unsafe class Arena
{
    public const byte NotHead = 0xFF;

    public readonly nuint Base;
    public readonly int MaxOrder;
    public readonly int PageCount;
    public readonly byte* HeadOrder;
    public readonly int* Next;
    public readonly int* Prev;
    public readonly int* FreedAtMs;
    public readonly ulong* Dirty;
    public readonly int[] FreeList;
    public uint NonEmpty;

    /// <exception cref="OutOfMemoryException">No memory for the metadata; nothing is left allocated.</exception>
    public Arena(nuint @base, int maxOrder)
    {
        Base = @base;
        MaxOrder = maxOrder;
        PageCount = 1 << maxOrder;
        FreeList = new int[maxOrder + 1];
        Array.Fill(FreeList, -1);
        try
        {
            HeadOrder = (byte*)NativeMemory.Alloc((nuint)PageCount);
            NativeMemory.Fill(HeadOrder, (nuint)PageCount, NotHead);
            Next = (int*)NativeMemory.Alloc((nuint)PageCount, sizeof(int));
            Prev = (int*)NativeMemory.Alloc((nuint)PageCount, sizeof(int));
            FreedAtMs = (int*)NativeMemory.Alloc((nuint)PageCount, sizeof(int));
            Dirty = (ulong*)NativeMemory.AllocZeroed((nuint)((PageCount + 63) / 64), sizeof(ulong));
        }
        catch (OutOfMemoryException)
        {
            NativeMemory.Free(HeadOrder);   // Free(null) is a no-op
            NativeMemory.Free(Next);
            NativeMemory.Free(Prev);
            NativeMemory.Free(FreedAtMs);
            throw;
        }
    }

    public nuint Bytes => (nuint)PageCount * OsMemory.PageSize;

    public bool Contains(nuint address) => address - Base < Bytes;

    public void Push(int page, int order, int freedAtMs)
    {
        int head = FreeList[order];
        Next[page] = head;
        Prev[page] = -1;
        if (head != -1)
            Prev[head] = page;
        FreeList[order] = page;
        HeadOrder[page] = (byte)order;
        FreedAtMs[page] = freedAtMs;
        NonEmpty |= 1u << order;
    }

    public void Unlink(int page, int order)
    {
        Debug.Assert(HeadOrder[page] == order, "unlinking a page that heads no free block of that order");
        int n = Next[page], p = Prev[page];
        if (p != -1)
            Next[p] = n;
        else
            FreeList[order] = n;
        if (n != -1)
            Prev[n] = p;
        HeadOrder[page] = NotHead;
        if (FreeList[order] == -1)
            NonEmpty &= ~(1u << order);
    }

    /// <summary>Dirty pages in [page, page + count).</summary>
    public int CountDirty(int page, int count)
    {
        int dirty = 0;
        for (int i = page; i < page + count;)
        {
            int word = i >> 6, bit = i & 63;
            int take = Math.Min(64 - bit, page + count - i);
            ulong mask = (take == 64 ? ulong.MaxValue : ((1UL << take) - 1)) << bit;
            dirty += BitOperations.PopCount(Dirty[word] & mask);
            i += take;
        }
        return dirty;
    }

    /// <summary>Sets or clears the dirty bits of [page, page + count).</summary>
    public void SetDirty(int page, int count, bool dirty)
    {
        for (int i = page; i < page + count;)
        {
            int word = i >> 6, bit = i & 63;
            int take = Math.Min(64 - bit, page + count - i);
            ulong mask = (take == 64 ? ulong.MaxValue : ((1UL << take) - 1)) << bit;
            if (dirty)
                Dirty[word] |= mask;
            else
                Dirty[word] &= ~mask;
            i += take;
        }
    }
}
