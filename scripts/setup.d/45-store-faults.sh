# The run store's fault tests (tests/test_store_*.py): the sqlite3 command (`store recover` also
# uses its .recover when it is installed), and a real network filesystem to put a store on: sshfs
# over a loopback TCP connection to OpenSSH's sftp-server (socat serves it), through FUSE. NFS
# cannot be tested on these machines: their kernel has neither the nfs nor the nfsd filesystem
# (see /proc/filesystems) and no modules to add them.
apt_install sqlite3 sshfs openssh-sftp-server socat
[ -e /dev/fuse ] || { echo "no /dev/fuse: the sshfs store tests need FUSE (load the fuse module)" >&2; exit 1; }
