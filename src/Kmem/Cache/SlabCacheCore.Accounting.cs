using System.Runtime.CompilerServices;
using Kmem.Slab;

namespace Kmem;

/// <summary>
/// The hooks of the one allocation exit and the one free entry (slab_post_alloc_hook and
/// slab_free_hook). Today: <see cref="SlabFlags.Account"/>, each object charged to the
/// allocating thread's <see cref="MemoryGroup"/> (memcg_slab_post_alloc_hook) and
/// uncharged from the group it was charged to when freed, whichever thread and whichever
/// door frees it. The group's id is kept after the object, past <see cref="UsableSize"/>,
/// where the object's user does not write.
/// </summary>
internal sealed unsafe partial class SlabCacheCore
{
    /// <summary>The allocation exit's hooks. Over a group limit the object goes back and the allocation fails.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void* AfterAlloc(void* obj, bool throwOnFailure)
    {
        int* id = (int*)((byte*)obj + _groupOffset);
        MemoryGroup? group = MemoryGroup.Current;
        if (group == null || group == MemoryGroup.Root)
        {
            *id = 0;
            return obj;
        }
        if (group.TryCharge(_layout.Stride, out MemoryGroup? refusedBy))
        {
            *id = group.Online().Id;
            return obj;
        }
        *id = 0;
        FreeObject(obj, PageLayer.PageMap.Lookup(obj));
        if (throwOnFailure)
        {
            throw new SlabAllocationException(Name, AllocationFailure.GroupLimit, (nuint)ObjectSize,
                $"memory group '{refusedBy!.Name}' would pass its limit of {refusedBy.Limit} bytes (usage {refusedBy.Usage})");
        }
        return null;
    }

    /// <summary>
    /// The free entry's hooks, after the boundary check: uncharges the object and forgets
    /// its group, so that a double free uncharges nothing. A group id that names no group
    /// means the word past the object was overwritten: the charge cannot be found, and the
    /// free goes on (the object is ours) after a report.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void BeforeFree(void* obj)
    {
        int* slot = (int*)((byte*)obj + _groupOffset);
        int id = *slot;
        if (id == 0)
            return;
        *slot = 0;
        if (MemoryGroup.TryFromId(id) is { } group)
        {
            group.Uncharge(_layout.Stride);
            return;
        }
        SlabReports.Publish(new SlabReport(SlabReportKind.CorruptedFreeList, Name, (nint)obj,
            $"cache '{Name}': object 0x{(nint)obj:x} carries memory-group id {id}, which names no group: the bytes past its usable size ({_usable}) were overwritten; its charge is lost",
            [(nint)obj], 1));
    }
}
