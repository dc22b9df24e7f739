"""Print kind's default storage manifest (pkg/build/nodeimage/const_storage.go of the kind module)
with the provisioner and helper images replaced: argv = const_storage.go PROVISIONER HELPER."""
import re
import sys

src, provisioner, helper = sys.argv[1:]
text = open(src).read()
m = re.search(r"const defaultStorageManifest = `(.*?)`\s*$", text, re.S)
if not m:
    sys.exit("storage-manifest.py: no defaultStorageManifest in " + src)
raw = m.group(1)
raw = raw.replace("` + storageProvisionerImage + `", provisioner).replace("` + storageHelperImage + `", helper)
if "`" in raw or provisioner not in raw:
    sys.exit("storage-manifest.py: unexpected manifest layout in " + src)
sys.stdout.write(raw.lstrip("\n"))
