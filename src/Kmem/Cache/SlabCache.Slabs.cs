using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Kmem.Locking;
using Kmem.PageLayer;
using Kmem.Slab;

namespace Kmem;

/// <summary>Slabs: creation, the partial and full lists, and returning slabs to pages. All under list_lock.</summary>
public sealed unsafe partial class SlabCache
{
    /// <summary>Empty slabs kept on the partial list for reuse; more are returned at once.</summary>
    private const int MaxEmptySlabs = 1;

    private readonly KLock _listLock = new("list_lock");
    private SlabHeader* _partial;
    private SlabHeader* _full;
    private long _partialCount;
    private long _emptyCount;
    private long _slabCount;
    /// <summary>Objects off their slab's free list: with users or parked in sheaves/barn.</summary>
    private long _objectsOut;
    private long _slabsAllocated;
    private long _slabsFreed;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void** LinkOf(void* obj) => (void**)((byte*)obj + _layout.FreeLinkOffset);

    /// <summary>
    /// Maps and formats a new slab, off every list. Takes no lock: the page layer has
    /// none, and nobody else can see the slab until <see cref="AddNewSlab"/>.
    /// </summary>
    private SlabHeader* NewSlab(out Pages.Refusal refusal)
    {
        var block = (byte*)Pages.AllocBlock((nuint)_layout.SlabSize, (nuint)_layout.SlabSize, out refusal, out bool zeroed);
        if (block == null)
            return null;
        var slab = (SlabHeader*)block;
        *slab = default;
        slab->Kind = BlockKind.Slab;
        slab->CacheIndex = _index;
        slab->Block = block;
        slab->BlockSize = (nuint)_layout.SlabSize;

        // Free list in address order, so a fresh slab is handed out front to back.
        byte* first = block + _layout.ObjectOffset;
        for (int i = 0; i < _layout.Objects - 1; i++)
            *LinkOf(first + i * _layout.Stride) = first + (i + 1) * _layout.Stride;
        *LinkOf(first + (_layout.Objects - 1) * _layout.Stride) = null;
        slab->Freelist = first;
        if (_checked && !zeroed)
            NativeMemory.Clear(block + _layout.BitmapOffset, (nuint)(_layout.ObjectOffset - _layout.BitmapOffset));

        PageMap.Set(block, (nuint)_layout.SlabSize, slab);
        return slab;
    }

    private void AddNewSlab(SlabHeader* slab)
    {
        using (_listLock.Scope())
        {
            _slabCount++;
            _slabsAllocated++;
            _emptyCount++;
            ListAdd(ref _partial, slab);
            slab->List = SlabList.Partial;
            _partialCount++;
        }
    }

    /// <summary>Returns a chain of slabs (linked by Next, off every list) to the page layer.</summary>
    private void ReleaseSlabs(SlabHeader* chain)
    {
        while (chain != null)
        {
            SlabHeader* next = chain->Next;
            Debug.Assert(chain->InUse == 0, "releasing a slab with objects in use");
            PageMap.Clear(chain->Block, chain->BlockSize);
            Pages.FreeBlock(chain->Block, chain->BlockSize);
            chain = next;
        }
    }

    /// <summary>
    /// Moves up to <paramref name="max"/> free objects from partial slabs to
    /// <paramref name="dest"/>. Caller holds list_lock.
    /// </summary>
    private int TakeFromPartial(void** dest, int max)
    {
        Debug.Assert(_listLock.IsHeldByCurrentThread, "list_lock not held");
        int got = 0;
        while (got < max && _partial != null)
        {
            SlabHeader* slab = _partial;
            AssertInvariants(slab);
            if (slab->InUse == 0)
                _emptyCount--;
            void* o = slab->Freelist;
            int taken = 0;
            while (o != null && got < max)
            {
                dest[got++] = o;
                taken++;
                o = *LinkOf(o);
            }
            slab->Freelist = o;
            slab->InUse += taken;
            if (o == null)
            {
                ListRemove(ref _partial, slab);
                _partialCount--;
                ListAdd(ref _full, slab);
                slab->List = SlabList.Full;
            }
        }
        _objectsOut += got;
        return got;
    }

    /// <summary>
    /// Returns objects to their slabs' free lists. Slabs that become empty beyond the
    /// reserve are unlinked onto <paramref name="release"/> for the caller to return
    /// after dropping the lock. Caller holds list_lock.
    /// </summary>
    private void ReturnToSlabs(void** objects, int count, ref SlabHeader* release)
    {
        Debug.Assert(_listLock.IsHeldByCurrentThread, "list_lock not held");
        for (int i = 0; i < count; i++)
        {
            void* o = objects[i];
            SlabHeader* slab = PageMap.Lookup(o);
            AssertInvariants(slab);
            *LinkOf(o) = slab->Freelist;
            slab->Freelist = o;
            if (slab->List == SlabList.Full)
            {
                ListRemove(ref _full, slab);
                ListAdd(ref _partial, slab);
                slab->List = SlabList.Partial;
                _partialCount++;
            }
            if (--slab->InUse == 0)
            {
                _emptyCount++;
                if (_emptyCount > MaxEmptySlabs)
                    UnlinkEmpty(slab, ref release);
            }
        }
        _objectsOut -= count;
    }

    /// <summary>Takes an empty slab off the partial list onto <paramref name="release"/>. Caller holds list_lock.</summary>
    private void UnlinkEmpty(SlabHeader* slab, ref SlabHeader* release)
    {
        Debug.Assert(slab->InUse == 0 && slab->List == SlabList.Partial, "not an empty partial slab");
        ListRemove(ref _partial, slab);
        _partialCount--;
        _emptyCount--;
        _slabCount--;
        _slabsFreed++;
        slab->Next = release;
        release = slab;
    }

    /// <summary>Unlinks every empty slab for release. Caller holds list_lock.</summary>
    private void UnlinkAllEmpty(ref SlabHeader* release)
    {
        for (SlabHeader* slab = _partial; slab != null;)
        {
            SlabHeader* next = slab->Next;
            if (slab->InUse == 0)
                UnlinkEmpty(slab, ref release);
            slab = next;
        }
        Debug.Assert(_emptyCount == 0, "empty count out of step with the partial list");
    }

    private static void ListAdd(ref SlabHeader* head, SlabHeader* slab)
    {
        slab->Prev = null;
        slab->Next = head;
        if (head != null)
            head->Prev = slab;
        head = slab;
    }

    private static void ListRemove(ref SlabHeader* head, SlabHeader* slab)
    {
        if (slab->Prev != null)
            slab->Prev->Next = slab->Next;
        else
            head = slab->Next;
        if (slab->Next != null)
            slab->Next->Prev = slab->Prev;
        slab->Prev = slab->Next = null;
    }
}
