// Loaded first: starts the requests the study page's first drawing waits for (the token's access, the
// model's labels and, at a participant's address, its days and hour rows) while the browser is still
// running the chart library's 490 KB. study.js picks the answers up (`takeEarly`); nothing else is done here.
"use strict";
window.studyEarly = (() => {
  const token = sessionStorage.getItem("har.token"); // common.js's TOKEN_KEY (not loaded yet)
  if (!token) return {};
  const get = (path) => fetch(path, {headers: {Authorization: `Bearer ${token}`}, cache: "no-store"});
  const early = {access: get("/study/access"), model: fetch("/model", {cache: "no-store"})};
  const subject = decodeURIComponent(location.hash.slice(1));
  if (subject) {
    const base = encodeURIComponent(subject);
    Object.assign(early, {subject, days: get(`/subjects/${base}/days`), cells: get(`/study/subjects/${base}/hours`)});
  }
  return early;
})();
