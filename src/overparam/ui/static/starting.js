"use strict";
// A run this explorer started that is not recorded yet: show it as soon as it is.
(function () {
  const data = OP.pageData();
  if (data.returncode !== null) return;
  OP.watch.add(data.run_id);
  let polls = 0;
  OP.onLive((live) => {
    polls += 1;
    if (live.status[data.run_id] || polls % 5 === 0) location.reload();
  });
})();
