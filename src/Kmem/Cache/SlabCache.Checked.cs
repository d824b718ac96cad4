using System.Diagnostics;
using Kmem.PageLayer;
using Kmem.Slab;

namespace Kmem;

/// <summary>
/// <see cref="SlabFlags.ConsistencyChecks"/>: every allocation and free goes straight
/// to the slab under list_lock and flips the object's bit in the slab's allocation
/// bitmap, so a double free is caught every time, and a corrupted free-list link is
/// caught before it is handed out.
/// </summary>
public sealed unsafe partial class SlabCache
{
    private ulong* BitmapOf(SlabHeader* slab) => (ulong*)((byte*)slab + _layout.BitmapOffset);

    private int ObjectIndex(SlabHeader* slab, void* obj) =>
        (int)((uint)((byte*)obj - (byte*)slab - _layout.ObjectOffset) / (uint)_layout.Stride);

    private void* CheckedAlloc(bool throwOnFailure)
    {
        bool waited = false;
        while (true)
        {
            using (_listLock.Scope())
            {
                SlabHeader* slab = _partial;
                if (slab != null)
                {
                    void* o = slab->Freelist;
                    uint offset = (uint)((byte*)o - (byte*)slab - _layout.ObjectOffset);
                    if (PageMap.Lookup(o) != slab || offset >= _span || !_layout.IsObjectBoundary(offset))
                        throw new SlabUsageException(Name, (nint)o, $"cache '{Name}': free list of slab 0x{(nint)slab:x} is corrupted: next free object 0x{(nint)o:x} is not an object of this slab (a write after free?)");
                    int index = ObjectIndex(slab, o);
                    ref ulong word = ref BitmapOf(slab)[index >> 6];
                    if ((word & (1UL << index)) != 0)
                        throw new SlabUsageException(Name, (nint)o, $"cache '{Name}': object 0x{(nint)o:x} is on the free list but marked allocated (free list corrupted)");
                    word |= 1UL << index;
                    TakeFromPartial(&o, 1);
                    return o;
                }
            }
            SlabHeader* fresh = NewSlab(out AllocationFailure failure, out Exception? thrown);
            if (fresh == null)
            {
                if (failure == AllocationFailure.PageLimit && !waited)
                {
                    waited = true;
                    Kmem.Reclaim.WaitForPressurePass();
                    continue;
                }
                return Fail(failure, thrown, throwOnFailure);
            }
            AddNewSlab(fresh);
        }
    }

    private void CheckedFree(void* obj, SlabHeader* slab)
    {
        SlabHeader* release = null;
        bool excess;
        using (_listLock.Scope())
        {
            int index = ObjectIndex(slab, obj);
            ref ulong word = ref BitmapOf(slab)[index >> 6];
            if ((word & (1UL << index)) == 0)
                throw new SlabUsageException(Name, (nint)obj, $"cache '{Name}': double free of object 0x{(nint)obj:x} (it is already free)");
            word &= ~(1UL << index);
            excess = ReturnToSlabs(&obj, 1, ref release);
        }
        AfterReturn(release, excess);
    }

    /// <summary>Up to <paramref name="max"/> addresses of allocated objects (for reports). Caller holds list_lock.</summary>
    private List<nint> LiveObjects(int max)
    {
        Debug.Assert(_listLock.IsHeldByCurrentThread, "list_lock not held");
        var live = new List<nint>();
        var free = new HashSet<nint>();
        for (int list = 0; list < 2; list++)
        {
            for (SlabHeader* slab = list == 0 ? _full : _partial; slab != null && live.Count < max; slab = slab->Next)
            {
                if (slab->InUse == 0)
                    continue;
                free.Clear();
                for (void* o = slab->Freelist; o != null; o = *LinkOf(o))
                    free.Add((nint)o);
                byte* first = (byte*)slab + _layout.ObjectOffset;
                for (int i = 0; i < _layout.Objects && live.Count < max; i++)
                {
                    nint o = (nint)(first + i * _layout.Stride);
                    if (!free.Contains(o))
                        live.Add(o);
                }
            }
        }
        return live;
    }
}
