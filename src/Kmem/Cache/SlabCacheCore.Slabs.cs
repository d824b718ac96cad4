using System.Buffers;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Kmem.Locking;
using Kmem.PageLayer;
using Kmem.Slab;

namespace Kmem;

/// <summary>Slabs: creation, the partial and full lists, and returning slabs to pages. All under list_lock.</summary>
internal sealed unsafe partial class SlabCacheCore
{
    /// <summary>
    /// Empty slabs a cache without constructor or destructor keeps on the partial list for
    /// reuse; more are returned at once, inside Free, as SLUB's discard_slab does. A
    /// ctor/dtor cache keeps them all until the reclaim thread frees those beyond its reserve.
    /// </summary>
    private const int MaxEmptySlabs = 1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void** LinkOf(void* obj) => (void**)((byte*)obj + _layout.FreeLinkOffset);

    /// <summary>
    /// Maps and formats a new slab, off every list, and constructs its objects. Takes no
    /// lock: the page layer has none, and nobody else can see the slab until
    /// <see cref="AddNewSlab"/>. On a constructor failure the objects built are destructed
    /// and the slab is freed here, before null is returned (the RFC's error path, which
    /// calls __free_slab before failing): the memory and what the constructed objects own
    /// (per-CPU areas, charges) are back before the allocation fails, so a retry under a
    /// limit can succeed. Safe in this thread because the constructor just ran in it with
    /// no allocator lock held; the destructor runs under this cache's sheaf_drain in its
    /// leaf-only region, as on the reclaim thread.
    /// </summary>
    private SlabHeader* NewSlab(out AllocationFailure failure, out Exception? thrown)
    {
        thrown = null;
        var block = (byte*)Pages.AllocBlock((nuint)_layout.SlabSize, (nuint)_layout.SlabSize, out Pages.Refusal refusal, out bool zeroed);
        if (block == null)
        {
            failure = Pages.ToFailure(refusal);
            return null;
        }
        failure = default;
        SlabHeader* slab = FormatSlab(block, zeroed);

        slab->Constructed = Construct(slab, out thrown);
        if (slab->Constructed < _layout.Objects || thrown != null)
        {
            failure = AllocationFailure.ConstructorFailed;
            DiscardUnpublished(slab);
            return null;
        }
        return slab;
    }

    /// <summary>
    /// Makes <paramref name="block"/> a slab of this cache: header, free list, bitmap, and
    /// the page map pointing at it. No lock, no allocation when the page-map leaf exists
    /// (as for blocks from the <see cref="PageReserve"/>), no constructor.
    /// </summary>
    private SlabHeader* FormatSlab(byte* block, bool zeroed)
    {
        var slab = (SlabHeader*)block;
        *slab = default;
        slab->Kind = BlockKind.Slab;
        slab->CacheIndex = _index;
        slab->Block = block;
        slab->BlockSize = (nuint)_layout.SlabSize;
        slab->Freelist = _randomize ? BuildShuffledFreeList(block) : BuildFreeList(block);
        if (!zeroed)
            NativeMemory.Clear(BitmapOf(slab), (nuint)(_layout.ObjectOffset - _layout.BitmapOffset));
        PageMap.Set(block, (nuint)_layout.SlabSize, slab, PageMap.SlabTag(_index));
        return slab;
    }

    /// <summary>Free list in address order, so a fresh slab is handed out front to back.</summary>
    private void* BuildFreeList(byte* block)
    {
        byte* first = block + _layout.ObjectOffset;
        for (int i = 0; i < _layout.Objects - 1; i++)
            *LinkOf(first + i * _layout.Stride) = first + (i + 1) * _layout.Stride;
        *LinkOf(first + (_layout.Objects - 1) * _layout.Stride) = null;
        return first;
    }

    /// <summary>
    /// RandomizeFreelist (CONFIG_SLAB_FREELIST_RANDOM): the objects of a new slab are
    /// linked in a random permutation, so the next object's address cannot be guessed
    /// from the last one's.
    /// </summary>
    private void* BuildShuffledFreeList(byte* block)
    {
        int n = _layout.Objects;
        int[] order = ArrayPool<int>.Shared.Rent(n);
        for (int i = 0; i < n; i++)
            order[i] = i;
        Random.Shared.Shuffle(order.AsSpan(0, n));
        byte* first = block + _layout.ObjectOffset;
        for (int i = 0; i < n - 1; i++)
            *LinkOf(first + order[i] * _layout.Stride) = first + order[i + 1] * _layout.Stride;
        *LinkOf(first + order[n - 1] * _layout.Stride) = null;
        void* head = first + order[0] * _layout.Stride;
        ArrayPool<int>.Shared.Return(order);
        return head;
    }

    /// <summary>
    /// Publishes a slab from <see cref="NewSlab"/>. If the cache was disposed meanwhile the
    /// slab is destructed and freed here (nobody ever saw its objects), and the caller is
    /// told the cache is gone.
    /// </summary>
    private void AddNewSlab(SlabHeader* slab)
    {
        using (_listLock.Scope())
        {
            if (!_disposed)
            {
                LinkNewSlab(slab);
                return;
            }
        }
        DiscardUnpublished(slab);
        ThrowDisposed(null);
    }

    /// <summary>
    /// Destructs the constructed objects of a slab nobody has seen (off every list, never
    /// in the page map's users' hands) and frees it, in the calling thread. A destructor's
    /// exception is reported, not thrown: the caller is already failing.
    /// </summary>
    private void DiscardUnpublished(SlabHeader* slab)
    {
        slab->Next = null;
        Exception? failure;
        using (_drainLock.Scope())
            failure = FreeSlabs(slab, SlabFreedBy.Rollback, out _);
        if (failure != null)
        {
            SlabReports.Publish(new SlabReport(SlabReportKind.DestructorFailed, Name, 0,
                $"cache '{Name}': a destructor threw while a slab whose construction failed was rolled back (every built object was destructed): {failure.GetType().Name}: {failure.Message}", [], 0));
        }
    }

    /// <summary>Puts a new, empty slab on the partial list. Caller holds list_lock.</summary>
    private void LinkNewSlab(SlabHeader* slab)
    {
        Debug.Assert(_listLock.IsHeldByCurrentThread, "list_lock not held");
        _slabCount++;
        _slabsAllocated++;
        _emptyCount++;
        ListAdd(ref _partial, slab);
        slab->List = SlabList.Partial;
        _partialCount++;
    }

    /// <summary>
    /// The one place slabs are freed: returns a chain of slabs (linked by Next, off every
    /// list) to the page layer, destructing their objects first. A ctor/dtor cache calls
    /// it only from the reclaim thread or inside Shrink/Dispose, holding sheaf_drain and
    /// nothing else; a TypesafeByRcu cache only once the slabs' grace period has ended.
    /// Returns the first exception a destructor threw; the slabs are freed regardless.
    /// <paramref name="freed"/> is how many.
    /// </summary>
    private Exception? FreeSlabs(SlabHeader* chain, SlabFreedBy by, out long freed)
    {
        Debug.Assert(!_lifecycle || _drainLock.IsHeldByCurrentThread, "a ctor/dtor cache frees slabs only under sheaf_drain (reclaim, Shrink, Dispose)");
        Exception? first = null;
        freed = 0;
        while (chain != null)
        {
            SlabHeader* next = chain->Next;
            Debug.Assert(chain->InUse == 0, "releasing a slab with objects in use");
            AssertWholeFreeList(chain);
            if (_lifecycle && Destruct(chain) is { } failure)
                first ??= failure;
            PageMap.Clear(chain->Block, chain->BlockSize);
            Pages.FreeBlock(chain->Block, chain->BlockSize);
            freed++;
            chain = next;
        }
        if (freed != 0)
        {
            if (by != SlabFreedBy.Rollback)
                Interlocked.Add(ref _slabsFreed, freed);
            if (by == SlabFreedBy.Reclaim)
                Interlocked.Add(ref _slabsFreedByReclaim, freed);
            else if (by == SlabFreedBy.Shrink)
                Interlocked.Add(ref _slabsFreedByShrink, freed);
        }
        return first;
    }

    /// <summary>
    /// Debug: a slab about to be freed has no object in use (every bitmap bit clear), and
    /// its free list stays inside the slab without a cycle. The list may be shorter than
    /// the slab: a write after free that bent a link to another free object strands the
    /// objects it skipped, which are free all the same (destructors find them by address).
    /// </summary>
    [Conditional("DEBUG")]
    private void AssertWholeFreeList(SlabHeader* slab)
    {
        ulong* bitmap = BitmapOf(slab);
        for (int i = 0; i < _layout.Objects; i++)
            Debug.Assert((bitmap[i >> 6] & (1UL << i)) == 0, $"cache '{Name}': slab freed with object {i} in use");
        int n = 0;
        for (void* o = slab->Freelist; o != null && n <= _layout.Objects; o = *LinkOf(o))
        {
            uint offset = (uint)((byte*)o - (byte*)slab - _layout.ObjectOffset);
            Debug.Assert(offset < (uint)_layout.Span && _layout.IsObjectBoundary(offset), $"cache '{Name}': free list of a slab being freed leaves the slab");
            Debug.Assert(++n <= _layout.Objects, $"cache '{Name}': free list of a slab being freed is longer than the slab (a cycle: double free)");
        }
    }

    private ulong* BitmapOf(SlabHeader* slab) => (ulong*)((byte*)slab + _layout.BitmapOffset);

    private int ObjectIndex(SlabHeader* slab, void* obj) =>
        (int)((uint)((byte*)obj - (byte*)slab - _layout.ObjectOffset) / (uint)_layout.Stride);

    /// <summary>
    /// Moves up to <paramref name="max"/> free objects from partial slabs to
    /// <paramref name="dest"/>, setting each one's bitmap bit. Every link followed is
    /// checked first (inside this slab, at an object boundary, bit clear): a free list
    /// damaged by a write after free is rebuilt from the bitmap and reported, never
    /// followed. Caller holds list_lock.
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
            ulong* bitmap = BitmapOf(slab);
            void* o = slab->Freelist;
            int taken = 0;
            while (o != null && got < max)
            {
                uint offset = (uint)((byte*)o - (byte*)slab - _layout.ObjectOffset);
                int index = (int)(offset / (uint)_layout.Stride);
                if (offset >= (uint)_layout.Span || !_layout.IsObjectBoundary(offset) || (bitmap[index >> 6] & (1UL << index)) != 0)
                {
                    o = RepairFreeList(slab, o, taken);
                    continue;
                }
                bitmap[index >> 6] |= 1UL << index;
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
    /// The free list of <paramref name="slab"/> led to <paramref name="bad"/>, which is not
    /// a free object of it. Rebuilds the list from the bitmap (every object whose bit is
    /// clear, in address order: the bitmap is changed only under list_lock, with the list),
    /// defers a report, and returns the new head. <paramref name="takenNow"/> objects were
    /// already taken in this pass (their bits are set, so they are not relinked).
    /// </summary>
    private void* RepairFreeList(SlabHeader* slab, void* bad, int takenNow)
    {
        ulong* bitmap = BitmapOf(slab);
        byte* first = (byte*)slab + _layout.ObjectOffset;
        void* head = null;
        int free = 0;
        for (int i = _layout.Objects - 1; i >= 0; i--)
        {
            if ((bitmap[i >> 6] & (1UL << i)) != 0)
                continue;
            void* o = first + i * _layout.Stride;
            *LinkOf(o) = head;
            head = o;
            free++;
        }
        Debug.Assert(free == _layout.Objects - slab->InUse - takenNow, "bitmap out of step with InUse");
        _freeListRepairs++;
        SlabReports.Defer(new SlabReport(SlabReportKind.CorruptedFreeList, Name, (nint)bad,
            $"cache '{Name}': free list of slab 0x{(nint)slab:x} is corrupted: next free object 0x{(nint)bad:x} is not a free object of this slab (a write after free?); rebuilt the list from the slab's bitmap ({free} free objects)",
            [(nint)bad], 1));
        return head;
    }

    /// <summary>
    /// Returns objects to their slabs' free lists, clearing each one's bitmap bit. An
    /// object whose bit is already clear is free in its slab already (a double free that
    /// reached the slab): it is dropped, counted in <paramref name="doubleFrees"/> and, when
    /// <paramref name="report"/>, reported, so a slab never counts an object twice and is
    /// never freed with a live one. In a cache without constructor or destructor, slabs
    /// that become empty beyond the reserve are unlinked onto <paramref name="release"/> for
    /// the caller to free after dropping the lock; a ctor/dtor cache keeps them, and the
    /// result says the reclaim thread has work. Caller holds list_lock.
    /// </summary>
    private bool ReturnToSlabs(void** objects, int count, ref SlabHeader* release, out int doubleFrees, bool report = true)
    {
        bool excess = false;
        doubleFrees = 0;
        Debug.Assert(_listLock.IsHeldByCurrentThread, "list_lock not held");
        for (int i = 0; i < count; i++)
        {
            void* o = objects[i];
            SlabHeader* slab = PageMap.Lookup(o);
            AssertInvariants(slab);
            int index = ObjectIndex(slab, o);
            ref ulong word = ref BitmapOf(slab)[index >> 6];
            if ((word & (1UL << index)) == 0)
            {
                doubleFrees++;
                _doubleFrees++;
                if (report)
                    DeferDoubleFreeReport(o);
                continue;
            }
            word &= ~(1UL << index);
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
                if (_emptyCount > _minEmptySlabs)
                {
                    if (_lifecycle)
                        excess = true;
                    else
                        UnlinkEmpty(slab, ref release);
                }
            }
        }
        _objectsOut -= count - doubleFrees;
        return excess;
    }

    /// <inheritdoc cref="ReturnToSlabs(void**, int, ref SlabHeader*, out int, bool)"/>
    private bool ReturnToSlabs(void** objects, int count, ref SlabHeader* release) =>
        ReturnToSlabs(objects, count, ref release, out _);

    private void DeferDoubleFreeReport(void* o) =>
        SlabReports.Defer(new SlabReport(SlabReportKind.DoubleFree, Name, (nint)o,
            $"cache '{Name}': double free of object 0x{(nint)o:x}: it came back to its slab while already free there; the second free was dropped",
            [(nint)o], 1));

    /// <summary>Takes an empty slab off the partial list onto <paramref name="release"/>. Caller holds list_lock.</summary>
    private void UnlinkEmpty(SlabHeader* slab, ref SlabHeader* release)
    {
        Debug.Assert(slab->InUse == 0 && slab->List == SlabList.Partial, "not an empty partial slab");
        ListRemove(ref _partial, slab);
        _partialCount--;
        _emptyCount--;
        _slabCount--;
        if (_typesafeByRcu)
        {
            WaitForGracePeriodLocked(slab);   // readers may still look at its objects
            return;
        }
        slab->Next = release;
        release = slab;
    }

    /// <summary>
    /// Unlinks empty slabs beyond <paramref name="keep"/>, at most <paramref name="max"/>,
    /// for release. Caller holds list_lock.
    /// </summary>
    private void UnlinkEmpties(long keep, long max, ref SlabHeader* release)
    {
        Debug.Assert(_listLock.IsHeldByCurrentThread, "list_lock not held");
        int unlinked = 0;
        for (SlabHeader* slab = _partial; slab != null && _emptyCount > keep && unlinked < max;)
        {
            SlabHeader* next = slab->Next;
            if (slab->InUse == 0)
            {
                UnlinkEmpty(slab, ref release);
                unlinked++;
            }
            slab = next;
        }
        Debug.Assert(keep > 0 || unlinked == max || _emptyCount == 0, "empty count out of step with the partial list");
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
