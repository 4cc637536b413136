/**
 * The only code that knows the server extension's URLs; turns its failures into messages.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

const API_PREFIX = 'jupyter-exec/api/v1';

const MISSING =
  'the jupyter-exec server extension is not answering: install jupyter-exec in the ' +
  "server's environment and restart Jupyter (`jupyter server extension list` should show jupyter_exec.server)";

/** A request the server refused or could not answer; the message is one line for the panel. */
export class ApiError extends Error {}

/**
 * Call the API: `path` under its prefix, `query` as URL parameters. Uses the server's
 * settings (base URL, token, XSRF cookie) like every JupyterLab request.
 */
export async function requestAPI<T>(
  path: string,
  query: Record<string, string | number> = {},
  method: 'GET' | 'POST' = 'GET'
): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const params = new URLSearchParams(
    Object.entries(query).map(([key, value]) => [key, String(value)])
  ).toString();
  const url = URLExt.join(settings.baseUrl, API_PREFIX, path) + (params ? `?${params}` : '');
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, { method }, settings);
  } catch (error) {
    throw new ApiError(`cannot reach the Jupyter server (${String(error)})`);
  }
  let data: any = null;
  try {
    data = await response.json();
  } catch {
    // not JSON: a page of the server, not an answer of ours
  }
  if (data === null || typeof data !== 'object') {
    throw new ApiError(MISSING);
  }
  if (!response.ok) {
    throw new ApiError(String(data.message ?? `${response.status} ${response.statusText}`));
  }
  return data as T;
}
